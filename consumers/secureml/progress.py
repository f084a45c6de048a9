"""Progress of long work on stderr: one mechanism for export, verify, materialize and reports.

Lines look like ``[export] 120,000/1,000,000 events (12.0%), 48,000/s, 2.5 s``. Counts are
throttled (at most one line per ``interval`` seconds, and a last one when done); steps are
printed at once. Shown on a terminal, or when asked for (``--progress``); never otherwise, so
scripts and pipes see only the result.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Throttled progress lines for one piece of work labelled ``label``."""

    def __init__(self, label: str, enabled: bool | None = None, *, stream: TextIO | None = None,
                 interval: float = 1.0) -> None:
        """``enabled=None``: on when stderr is a terminal."""
        self.label = label
        self._stream = stream
        self._enabled = enabled
        self.interval = interval
        self._started = time.perf_counter()
        self._shown = float("-inf")

    @property
    def stream(self) -> TextIO:
        """Where lines go (stderr as it is when they are printed, unless given)."""
        return self._stream or sys.stderr

    @property
    def enabled(self) -> bool:
        """Whether lines are printed (decided from the terminal when not given)."""
        if self._enabled is None:
            self._enabled = self.stream.isatty()
        return self._enabled

    def elapsed(self) -> float:
        """Seconds since the work started."""
        return time.perf_counter() - self._started

    def step(self, message: str) -> None:
        """Print one line now."""
        if self.enabled:
            print(f"[{self.label}] {message} ({self.elapsed():.1f} s)", file=self.stream, flush=True)

    def advance(self, done: int, total: int | None = None, unit: str = "events") -> None:
        """Report ``done`` of ``total`` items, at most once per interval (and always when done reaches total)."""
        if not self.enabled:
            return
        now = time.perf_counter()
        finished = total is not None and done >= total
        if now - self._shown < self.interval and not finished:
            return
        self._shown = now
        elapsed = max(now - self._started, 1e-9)
        count = f"{done:,}/{total:,} {unit} ({100 * done / max(total, 1):.1f}%)" if total is not None else (
            f"{done:,} {unit}")
        print(f"[{self.label}] {count}, {done / elapsed:,.0f}/s, {elapsed:.1f} s", file=self.stream, flush=True)

    def __call__(self, done: int, total: int) -> None:
        """``progress(done, total)``: the callback form that long loops take."""
        self.advance(done, total)
