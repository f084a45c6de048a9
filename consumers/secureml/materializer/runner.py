"""The materializer loop: poll, validate, dead-letter, decode, commit, compact."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from secureml.audit.codec import decode_one, is_sealed
from secureml.audit.config import AuditConfig, resolve_config
from secureml.audit.lake import Lake, events_table
from secureml.audit.schema import known_versions
from secureml.materializer.sources import EmbeddedSource, Item, Source

DEFAULT_GROUP = "secureml-audit-materializer"
_KNOWN_VERSIONS = frozenset(known_versions())


@dataclass
class MaterializeStats:
    """What one run did."""

    events: int = 0
    dead_letters: int = 0
    commits: int = 0
    compacted_files: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Events stored per second."""
        return self.events / self.seconds if self.seconds else 0.0


def rejection(item: Item) -> str | None:
    """Why an item cannot be materialised, or None when it is a sealed event of a known schema."""
    if item.reason:
        return item.reason
    if item.version not in _KNOWN_VERSIONS:
        return f"unknown or missing schema version {item.version!r} (known: {sorted(_KNOWN_VERSIONS)})"
    if not item.value or not is_sealed(item.value):
        return "not a sealed audit event: the trailing SHA-256 does not match the bytes (corrupt or foreign)"
    return None


def _table(items: list[Item]) -> Any:
    return events_table(
        [i.source for i in items], [i.position for i in items],
        [i.version or 0 for i in items], [i.value or b"" for i in items],
    )


class Checkpointer(Protocol):
    """Hook for the integrity layer: sign what the lake holds, now and then and at the end."""

    def after_commit(self, lake: Lake) -> None:
        """Called after every commit (rate-limit inside)."""

    def finish(self, lake: Lake) -> None:
        """Called once when the run ends, after the last commit and compaction."""


def default_checkpointer(config: AuditConfig) -> Checkpointer | None:
    """The integrity layer's checkpointer for a configuration, when it is installed."""
    try:
        from secureml.audit.integrity import checkpointer_for
    except ImportError:
        return None
    return checkpointer_for(config)


class Materializer:
    """Moves items from a source into a lake in batches, each committed exactly once."""

    def __init__(
        self,
        lake: Lake,
        source: Source,
        *,
        batch_events: int = 200_000,
        commit_interval: float = 0.2,
        progress: Callable[[str], None] | None = None,
        background_compaction: bool = True,
        checkpointer: Checkpointer | None = None,
        compaction_interval: float = 2.0,
    ) -> None:
        self.lake = lake
        self.source = source
        self.batch_events = batch_events
        self.commit_interval = commit_interval
        self.progress = progress
        self.background_compaction = background_compaction
        self.checkpointer = checkpointer
        self.compaction_interval = compaction_interval
        self.stats = MaterializeStats()

    def run(self, *, once: bool = False, stop: threading.Event | None = None) -> MaterializeStats:
        """Materialise until caught up (once) or until ``stop`` is set."""
        stop = stop or threading.Event()
        began = time.monotonic()
        self.lake.remove_orphans()
        self.source.start(lambda: self.lake.snapshot().positions)
        compactor = None
        if self.background_compaction and not once:
            compactor = threading.Thread(target=self._compact_loop, args=(stop,), daemon=True, name="compactor")
            compactor.start()
        pending: list[Item] = []
        ranges: dict[str, list[int]] = {}
        last_commit = last_report = time.monotonic()
        try:
            while not stop.is_set():
                room = max(1, self.batch_events - len(pending))
                for item in self.source.poll(min(room, 50_000), 0.05 if once else 0.1):
                    span = ranges.setdefault(item.source, [item.position, item.next_position])
                    span[1] = item.next_position
                    reason = rejection(item)
                    if reason is None:
                        pending.append(item)
                    else:
                        self.source.dead_letter(item, reason)
                        self.stats.dead_letters += 1
                now = time.monotonic()
                caught_up = self.source.caught_up()
                if ranges and (len(pending) >= self.batch_events or now - last_commit >= self.commit_interval
                               or (once and caught_up)):
                    self._commit(pending, ranges)
                    pending, ranges, last_commit = [], {}, time.monotonic()
                if self.progress and now - last_report >= 5:
                    self._report(began)
                    last_report = now
                if once and caught_up and not ranges:
                    break
            if ranges:
                self._commit(pending, ranges)
        finally:
            stop.set()
            if compactor is not None:
                compactor.join()
            self.source.close()
        if once:
            self.stats.compacted_files += self.lake.compact_all()
        self.lake.ensure_catalog()
        if self.checkpointer is not None:
            self.checkpointer.finish(self.lake)
        self.stats.seconds = time.monotonic() - began
        if self.progress:
            self._report(began)
        return self.stats

    def _commit(self, items: list[Item], ranges: dict[str, list[int]]) -> None:
        try:
            table = _table(items)
        except Exception:  # noqa: BLE001 - sealed yet undecodable (forged): sort the batch out one by one
            items = self._one_by_one(items)
            table = _table(items)
        self.source.flush_dead_letters()
        spans = {source: (start, nxt) for source, (start, nxt) in ranges.items()}
        self.stats.events += self.lake.commit(table, spans)
        self.stats.commits += 1
        self.source.committed({s: nxt for s, (_start, nxt) in spans.items()})
        if self.stats.commits == 1:
            self.lake.ensure_catalog()
        if self.checkpointer is not None:
            self.checkpointer.after_commit(self.lake)
        if not self.background_compaction:
            self.stats.compacted_files += self.lake.compact()

    def _one_by_one(self, items: list[Item]) -> list[Item]:
        good = []
        for item in items:
            try:
                decode_one(item.value or b"", item.version or 0)
                good.append(item)
            except Exception as exc:  # noqa: BLE001
                self.source.dead_letter(item, f"Avro decoding failed: {exc}")
                self.stats.dead_letters += 1
        return good

    def _compact_loop(self, stop: threading.Event) -> None:
        while not stop.wait(self.compaction_interval):
            try:
                while not stop.is_set() and (merged := self.lake.compact()):
                    self.stats.compacted_files += merged
            except Exception as exc:  # noqa: BLE001 - compaction is an optimisation: report, go on
                print(f"secureml-audit materializer: compaction failed: {exc}", file=sys.stderr)

    def _report(self, began: float) -> None:
        assert self.progress is not None
        elapsed = max(time.monotonic() - began, 1e-9)
        lag = self.source.lag()
        self.progress(
            f"materialized {self.stats.events:,} events ({self.stats.events / elapsed:,.0f}/s), "
            f"{self.stats.dead_letters} dead letters, {self.stats.commits} commits"
            + (f", lag {lag:,}" if lag is not None else "")
        )


def materialize(
    log_dir: str | os.PathLike[str] | None = None,
    *,
    bootstrap_servers: str | None = None,
    topic: str | None = None,
    group: str = DEFAULT_GROUP,
    once: bool = True,
    replay: bool = False,
    stop: threading.Event | None = None,
    progress: Callable[[str], None] | None = None,
    **options: Any,
) -> MaterializeStats:
    """Materialise Kafka (with bootstrap servers) or the embedded log of ``log_dir`` into its lake."""
    config = resolve_config(log_dir=log_dir, bootstrap_servers=bootstrap_servers, topic=topic)
    lake = Lake(config.log_dir)
    if replay:
        lake.reset()
    source: Source
    if config.transport == "kafka":
        from secureml.materializer.kafka_source import KafkaSource

        source = KafkaSource(config, group)
    else:
        source = EmbeddedSource(config.log_dir)
    return Materializer(
        lake, source, progress=progress, checkpointer=default_checkpointer(config), **options
    ).run(once=once, stop=stop)


def materialize_embedded(log_dir: str | os.PathLike[str], *, blocking: bool = True) -> MaterializeStats | None:
    """Catch the lake up with the embedded log in this process; None if another process is at it."""
    lake = Lake(log_dir)
    lock_path = lake.root / "_embedded.lock"
    lake.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            return None
        config = resolve_config(log_dir=log_dir, bootstrap_servers="")
        materializer = Materializer(
            lake, EmbeddedSource(Path(log_dir)), background_compaction=False,
            checkpointer=default_checkpointer(config),
        )
        return materializer.run(once=True)
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
