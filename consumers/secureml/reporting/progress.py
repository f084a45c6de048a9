"""Progress lines on stderr for reports long enough to make a user wonder."""

from __future__ import annotations

from secureml.progress import Progress as SharedProgress

AUTO_THRESHOLD_EVENTS = 100_000


class Progress(SharedProgress):
    """Prints '[report] <step> (<elapsed> s)' to stderr when enabled."""

    def __init__(self, enabled: bool | None) -> None:
        """enabled=None decides once the event count is known (see `size`)."""
        super().__init__("report", enabled=bool(enabled))
        self._auto = enabled is None

    def size(self, events: int, source: str) -> None:
        """Report how many events were read, enabling auto progress for large reports."""
        if self._auto:
            self._enabled = events >= AUTO_THRESHOLD_EVENTS
        self.step(f"read {events:,} events from {source}")
