"""Progress lines on stderr for reports long enough to make a user wonder."""

from __future__ import annotations

import sys
import time

AUTO_THRESHOLD_EVENTS = 100_000


class Progress:
    """Prints '[report] <step> (<elapsed> s)' to stderr when enabled."""

    def __init__(self, enabled: bool | None) -> None:
        """enabled=None decides once the event count is known (see `size`)."""
        self._enabled = enabled
        self._started = time.perf_counter()

    def size(self, events: int, source: str) -> None:
        """Report how many events were read, enabling auto progress for large reports."""
        if self._enabled is None:
            self._enabled = events >= AUTO_THRESHOLD_EVENTS
        self.step(f"read {events:,} events from {source}")

    def step(self, message: str) -> None:
        """Print one progress line if enabled."""
        if self._enabled:
            elapsed = time.perf_counter() - self._started
            print(f"[report] {message} ({elapsed:.1f} s)", file=sys.stderr, flush=True)
