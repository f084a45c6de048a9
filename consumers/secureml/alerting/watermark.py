"""Event-time watermarks: how far in event time the alerter has read every partition of the log.

Each partition (a Kafka partition of the events topic, or a segment of the embedded log)
delivers its events in time order, so once the alerter has read an event of time ``t`` from a
partition, every earlier event of that partition has been read. The watermark is the least of
these times over all partitions of the topic: every event at or before it has been read,
wherever it was written. Rules that correlate operations (which sit on different partitions)
judge an event once the watermark has passed it, so they fire as soon as the evidence is
complete and never before.

A partition that receives nothing would hold the watermark back forever. Once the alerter has
caught up with the log, a partition from which nothing has arrived for ``idle_timeout`` seconds
is idle: it counts as having passed the alerter's clock minus ``idle_timeout``. This is exact as
long as an event reaches the alerter within ``idle_timeout`` of its timestamp (producer
buffering, broker and network delay, clock skew between hosts); an event later than that is
judged as if it had not been written yet.

A run with ``--once`` ends when it has read the log as it was at start: then every partition
counts as idle (nothing more is coming in this run), so what is older than ``idle_timeout`` is
judged, and what is newer waits in the saved state for the next run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

NEVER = -(2**63)  # a watermark before every event: nothing is complete yet
_RELIST_SECONDS = 0.5


class Watermarks:
    """Newest event time read per partition, when each last sent something, and the watermark over all.

    ``partitions`` lists every partition of the log as ``source`` names (``<topic>/<n>`` or
    ``log/<segment>``), including those with no event yet; it is asked at most twice a second.
    ``event_times`` (newest event time per partition) is saved with the alerter's checkpoint.
    """

    def __init__(self, clock: Callable[[], int], partitions: Callable[[], Iterable[str]] = tuple,
                 event_times: dict[str, int] | None = None) -> None:
        self._clock = clock
        self._list_partitions = partitions
        self.event_times: dict[str, int] = dict(event_times or {})
        self._known: set[str] = set(self.event_times)
        self._heard: dict[str, int] = {}  # clock micros of the last arrival from each partition
        self._live_since: int | None = None
        self._final = False
        self._listed_at = float("-inf")

    def observe(self, source: str, newest: int) -> None:
        """Events up to time ``newest`` (UTC micros) arrived from partition ``source``."""
        if newest > self.event_times.get(source, NEVER):
            self.event_times[source] = newest
        self._known.add(source)
        self._heard[source] = self._clock()

    def caught_up(self, *, final: bool = False) -> None:
        """The alerter has read what the log held when it started: from now on silence means idleness.

        ``final``: the run ends here (``--once``), so every partition counts as idle.
        """
        if self._live_since is None:
            self._live_since = self._clock()
        self._final = self._final or final

    def watermark(self, idle_timeout: float) -> int:
        """UTC micros such that every event at or before it has been read, from every partition.

        The least over partitions of (newest event time read) - 1 µs; an idle partition (nothing
        for ``idle_timeout`` seconds since the alerter caught up) counts as at least the clock minus
        ``idle_timeout``. ``NEVER`` while a partition with nothing read is not yet idle.
        """
        self._relist()
        now = self._clock()
        idle_us = round(idle_timeout * 1_000_000)
        lowest: int | None = None
        for source in self._known:
            mark = self.event_times.get(source, NEVER)
            mark = mark - 1 if mark != NEVER else NEVER
            if self._live_since is not None:
                heard = max(self._heard.get(source, self._live_since), self._live_since)
                if self._final or now - heard >= idle_us:
                    mark = max(mark, now - idle_us)
            lowest = mark if lowest is None else min(lowest, mark)
        if lowest is None:  # no partition known at all
            return NEVER if self._live_since is None else now - idle_us
        return lowest

    def _relist(self) -> None:
        if time.monotonic() - self._listed_at < _RELIST_SECONDS:
            return
        self._listed_at = time.monotonic()
        for source in self._list_partitions():
            if source not in self._known:
                self._known.add(source)
                if self._live_since is not None:  # found while live: idle only after idle_timeout from now
                    self._heard[source] = self._clock()
