"""The materializer loop: poll, validate, dead-letter, decode, commit to the Delta table, compact."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from secureml.audit._fs import file_lock
from secureml.audit.config import AuditConfig, resolve_config
from secureml.audit.exceptions import LakeError
from secureml.audit.privacy import record_location
from secureml.lake.catalog import ensure_catalog
from secureml.lake.migrate import migrate_if_needed
from secureml.lake.rows import lake_schema
from secureml.lake.table import Lake
from secureml.materializer.compaction import compact_in_child
from secureml.retention.positions import without_expired
from secureml.stream.accept import accepted_events
from secureml.stream.decode import warm_decoder
from secureml.stream.sources import Batch, EmbeddedSource, Item, Source

log = logging.getLogger(__name__)

DEFAULT_GROUP = "secureml-audit-materializer"
EMBEDDED_LOCK_FILE = "_embedded.lock"  # held while one process catches the lake up with the embedded log
VACUUM_INTERVAL = 3600.0  # seconds between vacuums of a running service (retention: Lake.vacuum)
CATALOG_INTERVAL = 1.0  # seconds between rebuilds of the DuckDB catalog while commits keep coming
SERVICE_COMMIT_INTERVAL = 0.5  # seconds between a service's commits unless told: how fresh the lake stays
BUSY_COMPACTION_INTERVAL = 30.0  # seconds between a service's compactions while commits keep coming (idle: at once)
# A run once with a commit thread commits as soon as that thread is idle and 1/PIPELINE_SHARE of batch_events wait.
PIPELINE_SHARE = 8
ONCE_CHECKPOINT_INTERVAL = 1.0  # seconds between the checkpoints a run once from Kafka signs beside its commits
YOUNG_OBJECTS = 100_000  # the young generation's size while materializers run (fewer_collections)


@dataclass
class MaterializeStats:
    """What one run did."""

    events: int = 0
    dead_letters: int = 0
    commits: int = 0
    compacted_files: int = 0
    seconds: float = 0.0
    signed: bool | None = None  # whether checkpoints were signed (None: not known to this run)

    @property
    def rate(self) -> float:
        """Events stored per second."""
        return self.events / self.seconds if self.seconds else 0.0


@dataclass
class Pending:
    """The accepted events of one source since the last commit, decoded (or being decoded), and the span read."""

    start: int
    next_position: int
    parts: list[pa.Table | Future[pa.Table | None]] = field(default_factory=list)  # in position order

    def add(self, rows: pa.Table | Future[pa.Table | None] | None) -> None:
        """Append decoded rows, or their decoding under way (positions after those held)."""
        if rows is not None:
            self.parts.append(rows)

    def _tables(self) -> list[pa.Table]:
        tables = [part.result() if isinstance(part, Future) else part for part in self.parts]
        return [rows for rows in tables if rows is not None and rows.num_rows]

    def drop_from(self, position: int) -> None:
        """Forget the rows at ``position`` and after (the source reads them again)."""
        kept: list[pa.Table | Future[pa.Table | None]] = []
        for rows in self._tables():
            if rows["source_offset"][0].as_py() >= position:
                break
            if rows["source_offset"][-1].as_py() >= position:
                rows = rows.filter(pc.less(rows["source_offset"], position))
            kept.append(rows)
        self.parts = kept

    def table(self) -> pa.Table:
        """The rows as one table (once decoded)."""
        tables = self._tables()
        return pa.concat_tables(tables) if tables else lake_schema().empty_table()


class Worker:
    """Runs one call at a time on a thread of its own (named ``name``): ``start`` waits for the call before it
    and raises its error; ``wait`` joins the call under way and raises its error, ``join`` without raising."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def busy(self) -> bool:
        """A call is under way."""
        return self._thread is not None and self._thread.is_alive()

    def start(self, call: Callable[..., object], *args: object) -> None:
        """Run ``call(*args)`` in the background, once the call before it is done."""
        self.wait()
        self._thread = threading.Thread(target=self._run, args=(call, *args), name=self._name, daemon=True)
        self._thread.start()

    def _run(self, call: Callable[..., object], *args: object) -> None:
        try:
            call(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread by wait()
            self._error = exc

    def wait(self) -> None:
        """Wait for the call under way; raise its error, if it failed."""
        self.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def join(self) -> None:
        """Wait for the call under way, without raising."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None


class Committer(Worker):
    """Commits batches on a thread of its own, one at a time and in order, while the next is read.

    ``submit`` waits for the commit before it (so a rebalance that reads a batch again finds it
    committed and trimmed by the lake's positions, never stored twice) and raises its error.
    """

    def __init__(self, commit: Callable[[dict[str, Pending]], dict[str, int]]) -> None:
        super().__init__("lake-commit")
        self._commit = commit
        # Positions committed to the lake, for the reading thread to acknowledge to its source: a Kafka
        # consumer's commit() from this thread would wait for the consume() under way (deadlock).
        self._done: list[dict[str, int]] = []

    def submit(self, pending: dict[str, Pending]) -> None:
        """Commit ``pending`` in the background, once the commit before it is done."""
        self.start(self._store, pending)

    def _store(self, pending: dict[str, Pending]) -> None:
        self._done.append(self._commit(pending))

    def committed(self) -> list[dict[str, int]]:
        """The positions of the commits done since the last call, oldest first."""
        done, self._done = self._done, []
        return done


_collections_lock = threading.Lock()
_collections_held = 0  # runs under way in this process that asked for fewer_collections
_collections_before: tuple[int, int, int] | None = None


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """The cyclic garbage collector's young generation made 100,000 objects large while materializers run.

    A Kafka consumer makes a tracked Python object per message: at the default 700 that is a young collection
    every 700 messages and, every few hundred of those, a full one over every object of the process (imports
    included): 0.3-0.6 s of a 300k-event run, all of it holding the GIL. With 100,000 a run collects a few
    times. Process-wide, so the threshold before the first run is put back when the last one ends.
    """
    global _collections_held, _collections_before
    with _collections_lock:
        if _collections_held == 0:
            _collections_before = gc.get_threshold()
            gc.set_threshold(max(_collections_before[0], YOUNG_OBJECTS), *_collections_before[1:])
        _collections_held += 1
    try:
        yield
    finally:
        with _collections_lock:
            _collections_held -= 1
            if _collections_held == 0 and _collections_before is not None:
                gc.set_threshold(*_collections_before)


class Beside:
    """A checkpointer's ``after_commit`` on a thread of its own, asked for after each commit: never twice at once,
    and requests made while one runs are served by one more call. ``close`` ends it and raises its error."""

    def __init__(self, checkpointer: Checkpointer, lake: Lake) -> None:
        self._checkpointer = checkpointer
        self._lake = lake
        self._due = threading.Event()
        self._closing = False
        self._stopped = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="checkpoints", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._due.wait()
            if self._closing:
                return
            self._due.clear()
            try:
                self._checkpointer.after_commit(self._lake)
            except BaseException as exc:  # noqa: BLE001 - raised by close(), on the run's thread
                self._error = exc
                return

    def ask(self) -> None:
        """A commit is done: checkpoint (when the checkpointer's interval has passed)."""
        if not self._stopped:
            self._due.set()

    def stop_asking(self) -> None:
        """The run is caught up: later commits are left to its last checkpoint (one under way goes on)."""
        self._stopped = True

    def close(self, *, raising: bool = True) -> None:
        """Wait for the call under way, then end; raise its error, if one failed (``raising``)."""
        self._closing = True
        self._due.set()
        self._thread.join()
        if raising and self._error is not None:
            raise self._error


class Checkpointer(Protocol):
    """Hook for the integrity layer: sign what the lake holds, now and then and at the end."""

    def after_commit(self, lake: Lake) -> None:
        """Called after every commit (rate-limit inside)."""

    def finish(self, lake: Lake) -> None:
        """Called once when the run ends, after the last commit and compaction."""


def default_checkpointer(config: AuditConfig, witnesses: list[str] | None = None, *, interval: float | None = None
                         ) -> Checkpointer | None:
    """The integrity layer's checkpointer for a configuration (``witnesses``: URL VKEY pairs to cosign;
    ``interval``: seconds between checkpoints, default the integrity layer's)."""
    from secureml.integrity import checkpointer_for

    return checkpointer_for(config, witnesses, interval=interval)


class Materializer:
    """Moves items from a source into a lake in batches, each committed exactly once."""

    def __init__(
        self,
        lake: Lake,
        source: Source,
        *,
        batch_events: int = 200_000,
        commit_interval: float | None = None,
        progress: Callable[[str], None] | None = None,
        background_compaction: bool = True,
        checkpointer: Checkpointer | None = None,
        compaction_interval: float = BUSY_COMPACTION_INTERVAL,
        report_interval: float = 5.0,
    ) -> None:
        self.lake = lake
        self.source = source
        self.batch_events = batch_events
        self.commit_interval = commit_interval
        self.progress = progress
        self.background_compaction = background_compaction
        self.checkpointer = checkpointer
        self.compaction_interval = compaction_interval
        self.report_interval = report_interval
        self.stats = MaterializeStats()
        self._catalog_built = 0.0
        self._once = False  # the run stops when caught up
        self._maintained = False  # a maintenance thread runs beside the commits
        self._decoder: ThreadPoolExecutor | None = None  # decodes batches while the next is read (concurrent_commits)
        self._beside: Beside | None = None  # checkpoints beside the commits of a run once (concurrent_commits)

    def run(self, *, once: bool = False, stop: threading.Event | None = None) -> MaterializeStats:
        """Materialise until caught up (once) or until ``stop`` is set.

        A service commits every ``commit_interval`` seconds (SERVICE_COMMIT_INTERVAL unless given):
        that interval is how fresh the lake stays. A run ``once`` commits every ``batch_events``
        events and when caught up, unless given an interval: nobody reads the lake in between, and
        each commit costs a Delta version and a file per partition (hence compactions).
        """
        with fewer_collections():
            return self._run(once, stop)

    def _run(self, once: bool, stop: threading.Event | None) -> MaterializeStats:
        stop = stop or threading.Event()
        interval = self.commit_interval
        if interval is None:
            interval = float("inf") if once else SERVICE_COMMIT_INTERVAL
        began = time.monotonic()
        # With a source that allows it, batches are decoded on one thread of their own and committed on another
        # while the next ones are read: commits stay in order, one at a time (Committer).
        committer = Committer(self._commit) if self.source.concurrent_commits else None
        if self.source.concurrent_commits:
            self._decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode")
            if once and self.checkpointer is not None:
                self._beside = Beside(self.checkpointer, self.lake)  # (a service's maintenance thread does it)

        def positions(sources: list[str]) -> dict[str, int]:
            if committer is not None:
                # A partition assigned while our commit of it is under way: ask once it is stored, or
                # everything in it is read, decoded and committed again, only to be trimmed away.
                committer.join()
            return self.lake.snapshot().positions(sources)

        if self.source.slow_start:
            # While the group forms: load the decoder, and create the table (delta-rs's first call, the empty
            # commit) so that the first commit only writes.
            threading.Thread(target=self._warm, daemon=True, name="warm-up").start()
        self.source.start(positions)
        compactor = None
        self._once = once
        self._maintained = self.background_compaction and not once
        if self._maintained:
            compactor = threading.Thread(target=self._compact_loop, args=(stop,), daemon=True, name="compactor")
            compactor.start()
        pending: dict[str, Pending] = {}
        finisher: Worker | None = None
        count = 0
        last_commit = last_report = time.monotonic()
        try:
            while not stop.is_set():
                room = max(1, self.batch_events - count)
                wait = 0.05 if once else 0.1
                if pending and not (committer and committer.busy):
                    # Back in time for the commit that is due: waiting the whole poll would add to every latency.
                    wait = min(wait, max(0.0, last_commit + interval - time.monotonic()))
                for batch in self.source.poll(min(room, 50_000), wait):
                    count += self._accept(batch, pending)
                if committer is not None:
                    self._acknowledge(committer)
                now = time.monotonic()
                caught_up = self.source.caught_up()
                if once and caught_up and self._beside is not None:
                    self._beside.stop_asking()  # what is left is the last checkpoint's: no second one beside it
                due = count >= self.batch_events or now - last_commit >= interval or (once and caught_up)
                if once and committer is not None and not committer.busy:
                    # A run once keeps its commit thread busy: a batch written while the next is read is not
                    # waited for at the end (only the last one, written after the last read, is).
                    due = due or count >= self.batch_events // PIPELINE_SHARE
                if pending and due and not (committer and committer.busy and count < self.batch_events):
                    if committer is None:
                        self.source.committed(self._commit(pending))
                    else:
                        committer.submit(pending)
                    pending, count, last_commit = {}, 0, time.monotonic()
                if self.progress and now - last_report >= self.report_interval:
                    self._report(began)
                    last_report = now
                if once and caught_up and not pending:
                    break
            if pending and committer is None:
                self.source.committed(self._commit(pending))
            elif committer is not None:
                if pending:
                    committer.submit(pending)
                committer.wait()
                self._acknowledge(committer)
            if self._beside is not None:
                self._beside.close()
            if self.checkpointer is not None:
                # Everything is stored: sign it while the source closes, compaction and the catalog run.
                finisher = Worker("checkpoint")
                finisher.start(self.checkpointer.finish, self.lake)
        finally:
            stop.set()
            if committer is not None:
                committer.join()
            if compactor is not None:
                compactor.join()
            self.source.close()
            if self._beside is not None:
                self._beside.close(raising=False)  # (an error is unwinding, or it was closed)
                self._beside = None
            if self._decoder is not None:
                self._decoder.shutdown(cancel_futures=True)
                self._decoder = None
            if finisher is not None and sys.exc_info()[0] is not None:
                finisher.join()  # (not to leave it signing while the error unwinds; the error is the one to raise)
        if once:
            self.stats.compacted_files += self.lake.compact_all()
        ensure_catalog(self.lake)
        if finisher is not None:
            finisher.wait()
        self.stats.seconds = time.monotonic() - began
        if self.progress:
            self._report(began)
        return self.stats

    def _warm(self) -> None:
        warm_decoder()
        with contextlib.suppress(LakeError):  # the first commit says why, on the run's thread
            self.lake.created()

    def _accept(self, batch: Batch, pending: dict[str, Pending]) -> int:
        """Decode a batch into the pending commit, dead-letter what is not an event; returns the messages added.

        With a source that allows it (``concurrent_commits``) the batch is decoded on a thread of its own while
        the next one is read and the one before is written: the decoder releases the GIL, so reading, decoding
        and writing overlap. The commit waits for its batches' decoding.
        """
        first = batch.positions[0] if batch.positions else batch.next_position
        into = pending.get(batch.source)
        if into is None:
            into = pending[batch.source] = Pending(first, batch.next_position)
        elif first < into.next_position:
            # The source went back: a rebalance gave this instance the partition again and it
            # seeks to the lake's position, behind what is pending. What it reads again replaces
            # the pending rows from there on; kept as well, they would be stored twice.
            into.drop_from(first)
            into.start = min(into.start, first)
        into.next_position = batch.next_position
        if batch.positions:
            # (the seals are checked as it decodes: natively, in the same pass)
            into.add(accepted_events([batch], self._refuse) if self._decoder is None else
                     self._decoder.submit(accepted_events, [batch], self._refuse))
        return len(batch.positions)

    def _acknowledge(self, committer: Committer) -> None:
        """Tell the source what the lake now holds (from the reading thread)."""
        for positions in committer.committed():
            self.source.committed(positions)

    def _commit(self, pending: dict[str, Pending]) -> dict[str, int]:
        """Store a batch (once its decoding is done); returns the next position of each source it covers."""
        tables = {source: accepted.table() for source, accepted in pending.items()}
        self.source.flush_dead_letters()  # (the ones the reading thread found up to this batch too)
        spans = {source: (p.start, p.next_position) for source, p in pending.items()}
        self.stats.events += self.lake.commit(without_expired(self.lake, tables), spans)
        self.stats.commits += 1
        if not (self._maintained or self._once) and time.monotonic() - self._catalog_built >= CATALOG_INTERVAL:
            # (the maintenance thread does it, off this path, when there is one; a run once, at its end)
            ensure_catalog(self.lake)
            self._catalog_built = time.monotonic()
        if self._beside is not None:
            self._beside.ask()
        elif self.checkpointer is not None and not self._maintained:
            self.checkpointer.after_commit(self.lake)  # (a service's maintenance thread does it, off this path)
        if not self.background_compaction:
            self.stats.compacted_files += self.lake.compact()
        return {source: nxt for source, (_start, nxt) in spans.items()}

    def _refuse(self, item: Item, reason: str) -> None:
        """A message that is not a sealed event of a known schema, or does not decode: a dead letter."""
        self.source.dead_letter(item, reason)
        self.stats.dead_letters += 1

    def _compact_loop(self, stop: threading.Event) -> None:
        """Maintenance beside the commits: the DuckDB catalog each second, checkpoints, compaction, vacuum.

        A checkpoint reads and hashes every row since the one before (seconds, for a minute of events):
        on the commit thread it would hold back the commits, and so the lake's freshness, that long.
        Compaction runs in a child process (compaction.py says why), in the first round without a new
        commit, and while commits keep coming only every ``compaction_interval`` seconds: it competes
        with them for the cores, and merging today's partition rewrites its merged file too.
        """
        last_vacuum = last_compaction = time.monotonic()
        commits = self.stats.commits
        compacted: int | None = None  # the table version the last compaction left: until a newer one, nothing is due
        while not stop.wait(min(self.compaction_interval, CATALOG_INTERVAL)):
            try:
                ensure_catalog(self.lake)
                if self.checkpointer is not None:
                    self.checkpointer.after_commit(self.lake)
                busy, commits = self.stats.commits != commits, self.stats.commits
                if busy and time.monotonic() - last_compaction < self.compaction_interval:
                    continue
                version = self.lake.snapshot().version
                if version != compacted:
                    # A child costs a second of imports: only when a partition is due.
                    if self.lake.compaction_due():
                        last_compaction = time.monotonic()
                        self.stats.compacted_files += compact_in_child(self.lake)
                        version = self.lake.snapshot().version
                    compacted = version
                if time.monotonic() - last_vacuum >= VACUUM_INTERVAL:
                    last_vacuum = time.monotonic()
                    self.lake.vacuum()
            except Exception as exc:  # noqa: BLE001 - maintenance is an optimisation: report, go on
                log.warning("lake maintenance failed (the lake is unaffected; it is tried again): %s", exc)

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
    lake_uri: str | None = None,
    storage_options: dict[str, str] | None = None,
    instance_id: str | None = None,
    witnesses: list[str] | None = None,
    **options: Any,
) -> MaterializeStats:
    """Materialise Kafka (with bootstrap servers) or the embedded log of ``log_dir`` into its lake.

    ``lake_uri``/``storage_options`` put the Delta table elsewhere (``s3://...``); the default
    is ``log_dir/lake/events`` (or ``SECUREML_AUDIT_LAKE_URI``). ``instance_id`` names this
    member of the consumer group (static membership, for a service; a run ``once`` leaves the group
    when it is done); give each instance on one host its own.
    ``witnesses`` (``URL VKEY`` pairs; default ``$SECUREML_AUDIT_WITNESSES``) cosign each checkpoint.
    """
    config = resolve_config(log_dir=log_dir, bootstrap_servers=bootstrap_servers, topic=topic)
    lake = Lake(config.log_dir, uri=lake_uri, storage_options=storage_options)
    migrate_if_needed(lake)
    if replay:
        lake.reset()
    source: Source
    if config.transport == "kafka":
        from secureml.stream.kafka import KafkaSource

        source = KafkaSource(config, group, instance_id=instance_id, static=not once)
        record_location(config)  # the lake's readers find the events' keys from log_dir
    else:
        source = EmbeddedSource(config.log_dir)
    # A run once from Kafka signs checkpoints beside its commits every ONCE_CHECKPOINT_INTERVAL (its last one then
    # covers only the rows since, instead of the whole run, read back after everything else).
    checkpointer = default_checkpointer(config, witnesses, interval=ONCE_CHECKPOINT_INTERVAL
                                        if once and config.transport == "kafka" else None)
    if checkpointer is None and progress is not None:
        progress("NOT SIGNED: no signing key, so the lake gets no signed checkpoints and `verify` can vouch for "
                 "the hash chains only; create one with `secureml-audit keygen` and restart")
    stats = Materializer(lake, source, progress=progress, checkpointer=checkpointer, **options).run(
        once=once, stop=stop)
    stats.signed = checkpointer is not None
    return stats


def materialize_embedded(log_dir: str | os.PathLike[str], *, blocking: bool = True) -> MaterializeStats | None:
    """Catch the lake up with the embedded log in this process; None if another process is at it."""
    lake = Lake(log_dir)
    migrate_if_needed(lake)
    with file_lock(lake.root / EMBEDDED_LOCK_FILE, blocking=blocking) as held:
        if not held:
            return None
        config = resolve_config(log_dir=log_dir, bootstrap_servers="")
        materializer = Materializer(
            lake, EmbeddedSource(Path(log_dir)), background_compaction=False,
            checkpointer=default_checkpointer(config),
        )
        return materializer.run(once=True)
