"""The materializer loop: poll, validate, dead-letter, decode, commit, compact."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from secureml.audit.codec import decode_one
from secureml.audit.config import AuditConfig, resolve_config
from secureml.audit.lake import Lake, events_table, file_lock
from secureml.materializer.sources import Batch, EmbeddedSource, Item, Source, rejection

DEFAULT_GROUP = "secureml-audit-materializer"
EMBEDDED_LOCK_FILE = "_embedded.lock"  # held while one process catches the lake up with the embedded log


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


@dataclass
class Pending:
    """The accepted messages of one source since the last commit, and the span read."""

    start: int
    next_position: int
    positions: list[int] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)

    def table(self, source: str) -> Any:
        """Decoded lake rows."""
        return events_table([source] * len(self.values), self.positions, self.versions, self.values)


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
        pending: dict[str, Pending] = {}
        count = 0
        last_commit = last_report = time.monotonic()
        try:
            while not stop.is_set():
                room = max(1, self.batch_events - count)
                for batch in self.source.poll(min(room, 50_000), 0.05 if once else 0.1):
                    count += self._accept(batch, pending)
                now = time.monotonic()
                caught_up = self.source.caught_up()
                if pending and (count >= self.batch_events or now - last_commit >= self.commit_interval
                                or (once and caught_up)):
                    self._commit(pending)
                    pending, count, last_commit = {}, 0, time.monotonic()
                if self.progress and now - last_report >= 5:
                    self._report(began)
                    last_report = now
                if once and caught_up and not pending:
                    break
            if pending:
                self._commit(pending)
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

    def _accept(self, batch: Batch, pending: dict[str, Pending]) -> int:
        """Add a batch's valid messages to the pending commit, dead-letter the rest; returns the count added."""
        into = pending.get(batch.source)
        if into is None:
            into = pending[batch.source] = Pending(batch.positions[0], batch.next_position)
        into.next_position = batch.next_position
        added = 0
        for index, (version, value) in enumerate(zip(batch.versions, batch.values)):
            reason = batch.broken[index][1] if index in batch.broken else rejection(version, value)
            if reason is None:
                into.positions.append(batch.positions[index])
                into.versions.append(version)  # type: ignore[arg-type]
                into.values.append(value)
                added += 1
            else:
                self.source.dead_letter(batch.item(index), reason)
                self.stats.dead_letters += 1
        return added

    def _commit(self, pending: dict[str, Pending]) -> None:
        tables = {}
        for source, accepted in pending.items():
            try:
                tables[source] = accepted.table(source)
            except Exception:  # noqa: BLE001 - sealed yet undecodable (forged): sort them out one by one
                tables[source] = self._decodable(source, accepted).table(source)
        self.source.flush_dead_letters()
        spans = {source: (p.start, p.next_position) for source, p in pending.items()}
        self.stats.events += self.lake.commit(tables, spans)
        self.stats.commits += 1
        self.source.committed({s: nxt for s, (_start, nxt) in spans.items()})
        if self.stats.commits == 1:
            self.lake.ensure_catalog()
        if self.checkpointer is not None:
            self.checkpointer.after_commit(self.lake)
        if not self.background_compaction:
            self.stats.compacted_files += self.lake.compact()

    def _decodable(self, source: str, accepted: Pending) -> Pending:
        """The messages that decode one by one; the rest become dead letters."""
        kept = Pending(accepted.start, accepted.next_position)
        for position, version, value in zip(accepted.positions, accepted.versions, accepted.values):
            try:
                decode_one(value, version)
            except Exception as exc:  # noqa: BLE001
                item = Item(source, position, position + 1, version, value)
                self.source.dead_letter(item, f"Avro decoding failed: {exc}")
                self.stats.dead_letters += 1
                continue
            kept.positions.append(position)
            kept.versions.append(version)
            kept.values.append(value)
        return kept

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
    with file_lock(lake.root / EMBEDDED_LOCK_FILE, blocking=blocking) as held:
        if not held:
            return None
        config = resolve_config(log_dir=log_dir, bootstrap_servers="")
        materializer = Materializer(
            lake, EmbeddedSource(Path(log_dir)), background_compaction=False,
            checkpointer=default_checkpointer(config),
        )
        return materializer.run(once=True)
