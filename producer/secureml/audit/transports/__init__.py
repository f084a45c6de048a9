"""Transports carry sealed Avro events to their store: Kafka, or the embedded local log.

``base`` states the contract every transport keeps; ``factory`` chooses one per configuration
and process (``transport_for``); ``kafka`` and ``embedded`` implement it, and
``secureml.audit.testing`` holds an in-memory one for tests.
"""

from __future__ import annotations

from secureml.audit.transports.base import DeliveryReport, DeliveryTracker, Transport
from secureml.audit.transports.factory import transport_for

__all__ = ["DeliveryReport", "DeliveryTracker", "Transport", "transport_for"]
