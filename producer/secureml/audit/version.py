"""The library version recorded in every event's producer identity."""

from __future__ import annotations

__version__ = "0.1.0"
