"""The lake: a Delta Lake table of audit events, written exactly once by any number of materializers.

Default location ``log_dir/lake/events``; any URI delta-rs supports (``s3://bucket/path``,
``file:///...``) with ``storage_options`` (argument, or ``SECUREML_AUDIT_LAKE_URI`` and
``SECUREML_AUDIT_LAKE_STORAGE_OPTIONS`` as JSON). Partitioned by ``event_date`` (UTC).

Exactly once is the table's own commit protocol, as in kafka-delta-ingest: every commit
carries, as Delta app transactions, the next position of each source it consumed
(``kafka:<topic>/<partition>`` offsets, ``log/<segment>`` bytes) in the same atomic commit as
the rows. A restarted materializer resumes from ``transaction_version(source)``. A commit is
prepared against one table version; if another writer committed the same source meanwhile
(a rebalance, a zombie that lost its partition), delta-rs refuses it (``CommitFailedError``)
and the batch is trimmed against the new version before it is tried again, never blindly.
Appends of different sources never conflict, so instances on many hosts share one table.

Readers take one table version (``snapshot``) and read exactly its files, so a compaction
(``optimize``, or a closed day's rewrite in operation order: one commit each) never shows an
event twice or hides one; ``vacuum`` deletes superseded files only after a retention far longer
than any query.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import (
    BloomFilterProperties,
    ColumnProperties,
    CommitProperties,
    DeltaTable,
    QueryBuilder,
    Transaction,
    WriterProperties,
    write_deltalake,
)
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from secureml.audit._fs import make_private_dir, owner_only
from secureml.audit.config import ENV_PREFIX
from secureml.audit.exceptions import LakeError
from secureml.audit.timeutil import datetime_to_micros
from secureml.lake.rows import PARTITION_KEY, table_schema, with_partition

log = logging.getLogger(__name__)

LAKE_DIR = "lake"
EVENTS_DIR = "events"
CATALOG = "audit.duckdb"
PREVIOUS_FORMAT_MANIFEST = "_manifest.json"  # the lake before it was a Delta table (see migrate)
URI_ENV = ENV_PREFIX + "LAKE_URI"
STORAGE_OPTIONS_ENV = ENV_PREFIX + "LAKE_STORAGE_OPTIONS"
# Small row groups let a query for one operation and time range skip most of a sorted file.
ROW_GROUP_ROWS = 16_384
# Bloom filters on the id columns lookups filter by with `=` (an operation_id is a random uuid4, so
# min/max statistics skip nothing): DuckDB skips a row group whose filter rules the value out.
# Sized for a quarter of a row group's rows distinct at 1% false positives: ~8 KiB per column chunk.
BLOOM_FILTER_COLUMNS = ("operation_id", "user", "user_id")
_BLOOM = ColumnProperties(bloom_filter_properties=BloomFilterProperties(True, fpp=0.01, ndv=ROW_GROUP_ROWS // 4))
WRITER = WriterProperties(compression="ZSTD", max_row_group_size=ROW_GROUP_ROWS,
                          column_properties={name: _BLOOM for name in BLOOM_FILTER_COLUMNS})
# New rows: zstd's fastest level (files as small here, 10% less of a commit's CPU); compaction and the
# closed-day rewrite store them again with WRITER.
INGEST_WRITER = WriterProperties(compression="ZSTD", compression_level=1, max_row_group_size=ROW_GROUP_ROWS,
                                 column_properties={name: _BLOOM for name in BLOOM_FILTER_COLUMNS})
# Today's partition: compaction merges small files, streaming, into bins of up to TARGET_FILE_BYTES, one bin at
# a time; delta-rs never rewrites a file larger than that, so its work and memory are a bin's, not a partition's.
# A closed day is rewritten once, in CLUSTER_ORDER (a query for one operation name and a time range reads a few
# row groups of each file instead of every one), by DuckDB's sort: out of core, in a pool of SORT_MEMORY_LIMIT
# spilling under log_dir, streamed into files of TARGET_FILE_BYTES. Not delta-rs's z-order: it sorts a whole day
# in memory (7.3 GB at 10M events; with a DataFusion memory pool it spilled yet used more than the pool, and
# failed below 256 MB).
TARGET_FILE_BYTES = 128 * 2**20
CLUSTER_ORDER = ("operation_name", "timestamp", "source", "source_offset")  # the last two: one order for ties
SORT_MEMORY_LIMIT = "256MB"
CLUSTERED = "secureml-audit:clustered/"  # + a day: the app transaction of the day's rewrite in CLUSTER_ORDER
SPILL_DIR = ".cluster-spill"  # under the lake's local folder (log_dir/lake): the sort's temporary files
# Rows per batch from the sort to the writer: delta-rs's writer holds batches in flight by the dozen (a 1M-event day
# peaked at 1,188 MB with batches of 65,536 rows, 691 MB with 4,096); a quarter of a row group keeps groups whole.
CLUSTER_BATCH_ROWS = ROW_GROUP_ROWS // 4
SMALL_FILE_BYTES = TARGET_FILE_BYTES // 2  # a file still to be merged: only these make a partition due
COMPACT_SMALL_FILES = 16  # today's partition is compacted once it has this many small files
# Superseded files stay this long: far longer than any query, and time travel reaches as far.
VACUUM_RETENTION_HOURS = 7 * 24
# One writer at a time maintains the table (compaction); the lease is an app transaction.
MAINTENANCE_LEASE = "secureml-audit:maintenance-lease"
LEASE_SECONDS = 600
# How long a lease lasts unrenewed: a holder killed mid-compaction blocks the next one this long (a live holder
# renews it every third of it: ``Lake._lease_renewed``).
LEASE_SECONDS_ENV = ENV_PREFIX + "MAINTENANCE_LEASE_SECONDS"


def lease_seconds() -> int:
    """How long a compaction's maintenance lease lasts (``SECUREML_AUDIT_MAINTENANCE_LEASE_SECONDS``, default 600)."""
    raw = os.environ.get(LEASE_SECONDS_ENV)
    if raw is None:
        return LEASE_SECONDS
    if not raw.isdigit() or int(raw) < 1:
        raise LakeError(f"{LEASE_SECONDS_ENV} must be a whole number of seconds >= 1, got {raw!r}")
    return int(raw)
_COMMIT_ATTEMPTS = 20
WRITER_KEY = "secureml-audit.writer"  # commitInfo field naming the process that wrote a commit


def _writer() -> dict[str, str]:
    """Who commits: host and pid, kept in each commit's commitInfo (attributable, and for diagnosis)."""
    return {WRITER_KEY: f"{socket.gethostname()}:{os.getpid()}"}


@dataclass(frozen=True)
class LakeFile:
    """One data file of a table version."""

    path: str  # as in the Delta log, relative to the table root
    uri: str  # absolute path (local table) or object-store URI
    rows: int
    date: str
    min_ts: int | None  # microseconds, from the file's statistics
    max_ts: int | None


@dataclass(frozen=True)
class Snapshot:
    """One version of the table: its files and the positions its commits consumed.

    ``table`` is the thread's refreshed table object: read positions from a snapshot right
    away, before this thread takes a newer one (``version`` and ``files`` never change).
    """

    table: DeltaTable | None
    files: tuple[LakeFile, ...]
    version: int | None = None  # the Delta version, None when nothing was materialised yet

    @property
    def rows(self) -> int:
        """Events in this version."""
        return sum(f.rows for f in self.files)

    def position(self, source: str) -> int | None:
        """The next position of ``source`` this version holds everything before (None: never read)."""
        return None if self.table is None else self.table.transaction_version(source)

    def positions(self, sources: Iterable[str]) -> dict[str, int]:
        """``position`` of each source that has one."""
        held = {source: self.position(source) for source in sources}
        return {source: position for source, position in held.items() if position is not None}

    def uris(self, start_us: int | None = None, end_us: int | None = None) -> list[str]:
        """Files whose statistics say they may hold events in [start_us, end_us]."""
        return [
            f.uri for f in self.files
            if (start_us is None or f.max_ts is None or f.max_ts >= start_us)
            and (end_us is None or f.min_ts is None or f.min_ts <= end_us)
        ]


def _due_partition(snapshot: Snapshot, today: str) -> str | None:
    """The first partition due for compaction.

    Only small files count (below SMALL_FILE_BYTES): today's partition is due once
    COMPACT_SMALL_FILES piled up, a closed day while two or more remain, or while it was never
    rewritten in CLUSTER_ORDER (what compaction made during the day is in time order). What
    compaction made never makes a partition due again by itself.
    """
    assert snapshot.table is not None
    actions = pa.table(snapshot.table.get_add_actions(flatten=True)).select(["path", "size_bytes"]).to_pylist()
    sizes = {unquote(a["path"]): a["size_bytes"] for a in actions}
    small: dict[str, int] = {}
    for f in snapshot.files:
        small[f.date] = small.get(f.date, 0) + (sizes.get(f.path, 0) < SMALL_FILE_BYTES)
    for date, count in sorted(small.items()):
        if date >= today:
            if count >= COMPACT_SMALL_FILES:
                return date
        elif count >= 2 or snapshot.position(CLUSTERED + date) is None:
            return date
    return None


STATISTICS_PRECISION_US = 1_000  # of the min/max times in the Delta log


def _micros(value: Any) -> int | None:
    """A statistics value (datetime or integer microseconds) as microseconds."""
    if value is None:
        return None
    return datetime_to_micros(value) if isinstance(value, dt.datetime) else int(value)


def _without_views(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A batch with the lake's own column types: files delta-rs rewrote (a delete) store string views."""
    if not any("view" in str(f.type) for f in batch.schema):
        return batch
    types = table_schema()
    return batch.cast(pa.schema([f.with_type(types.field(f.name).type) if f.name in types.names else f
                                 for f in batch.schema]))


def _storage_options_from_env() -> dict[str, str]:
    raw = os.environ.get(STORAGE_OPTIONS_ENV)
    if not raw:
        return {}
    try:
        options = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise LakeError(f"{STORAGE_OPTIONS_ENV} must be a JSON object of strings: {exc}") from exc
    if not isinstance(options, dict):
        raise LakeError(f"{STORAGE_OPTIONS_ENV} must be a JSON object of strings")
    return {str(k): str(v) for k, v in options.items()}


class Lake:
    """The Delta table of one log directory (or of an explicit URI), for reading and writing."""

    def __init__(
        self,
        log_dir: str | os.PathLike[str],
        *,
        uri: str | None = None,
        storage_options: dict[str, str] | None = None,
    ) -> None:
        self.log_dir = Path(log_dir)
        self.root = self.log_dir / LAKE_DIR  # local: checkpoints, the previous format's files
        self.uri = uri or os.environ.get(URI_ENV) or str(self.root / EVENTS_DIR)
        self.storage_options = dict(storage_options if storage_options is not None else _storage_options_from_env())
        self.local = "://" not in self.uri or self.uri.startswith("file://")
        self._local = threading.local()  # a DeltaTable per thread: the compactor and the committer share a Lake

    # -- reading --------------------------------------------------------------------------------

    def exists(self) -> bool:
        """True once the table has its first commit."""
        return DeltaTable.is_deltatable(self.uri, self.storage_options or None)

    def _load(self, as_of: int | str | dt.datetime | None = None) -> DeltaTable | None:
        try:
            if as_of is None:
                return DeltaTable(self.uri, storage_options=self.storage_options or None)
            if isinstance(as_of, int) and not isinstance(as_of, bool):
                return DeltaTable(self.uri, version=as_of, storage_options=self.storage_options or None)
            table = DeltaTable(self.uri, storage_options=self.storage_options or None)
            table.load_as_version(as_of)
            return table
        except TableNotFoundError:
            if as_of is not None:
                raise LakeError(f"no lake at {self.uri} to travel back in: nothing was materialised yet") from None
            return None
        except (DeltaError, ValueError, OSError) as exc:
            if as_of is not None:
                raise LakeError(
                    f"the lake at {self.uri} has no version {as_of!r} ({exc}): give a version number the "
                    "table has, or a time after its first commit"
                ) from exc
            raise LakeError(f"cannot read the lake at {self.uri}: {exc}") from exc

    @property
    def _cached(self) -> DeltaTable | None:
        return getattr(self._local, "table", None)

    @_cached.setter
    def _cached(self, table: DeltaTable | None) -> None:
        self._local.table = table

    def latest(self) -> DeltaTable | None:
        """The newest version of the table, refreshed incrementally when this thread read it before."""
        cached = self._cached
        if cached is not None:
            if self._unchanged(cached.version()):
                return cached
            try:
                cached.update_incremental()
                return cached
            except (DeltaError, OSError):
                self._cached = None
        self._cached = self._load()
        return self._cached

    def _unchanged(self, version: int) -> bool:
        """True when a local table is still at ``version``: its commit file is there and the next one is not.

        Two stats instead of delta-rs's incremental update (a listing of the log, several ms per
        query on a busy machine). A Delta commit appears atomically as its numbered JSON file, so the
        next one's absence means no newer version exists (an object store is always asked).
        """
        if not self.local:
            return False
        log_dir = Path(self.uri.removeprefix("file://")) / "_delta_log"
        return (log_dir / f"{version:020d}.json").is_file() and not (log_dir / f"{version + 1:020d}.json").exists()

    def snapshot(self, as_of: int | str | dt.datetime | None = None) -> Snapshot:
        """One version of the table (the newest, or the one at ``as_of``: a version number or a time)."""
        if self.local and (self.root / PREVIOUS_FORMAT_MANIFEST).is_file():
            raise LakeError(f"{self.root} is in the previous lake format: convert it once with "
                            f"`secureml-audit migrate --log-dir {self.log_dir}` (a materializer does it by itself)")
        table = self.latest() if as_of is None else self._load(as_of)
        if table is None:
            return Snapshot(None, ())
        version = table.version()
        cached = getattr(self._local, "files", None)
        if cached is not None and cached[0] == (version, as_of is None):
            return Snapshot(table, cached[1], version)  # a version's files never change: list them once
        files = tuple(self._files(table))
        self._local.files = ((version, as_of is None), files)
        return Snapshot(table, files, version)

    def _files(self, table: DeltaTable) -> Iterator[LakeFile]:
        actions = pa.table(table.get_add_actions(flatten=True))
        columns = actions.column_names
        paths = actions["path"].to_pylist()
        rows = actions["num_records"].to_pylist()
        dates = actions[f"partition.{PARTITION_KEY}"].to_pylist()
        lows = actions["min.timestamp"].to_pylist() if "min.timestamp" in columns else [None] * len(paths)
        highs = actions["max.timestamp"].to_pylist() if "max.timestamp" in columns else [None] * len(paths)
        base = self.uri.rstrip("/")
        for path, count, date, low, high in zip(paths, rows, dates, lows, highs):
            relative = unquote(path)
            if "://" in relative or relative.startswith("/") or ".." in relative.split("/"):
                # The protocol allows absolute paths (shallow clones); this lake never writes one,
                # and a reader following it would open whatever file the metadata names.
                raise LakeError(f"the lake at {self.uri} names a data file outside itself ({relative!r}) in its "
                                f"version {table.version()}: refusing to read it; the Delta log was altered")
            uri = f"{base}/{relative}"
            if self.local:
                uri = uri.removeprefix("file://")
            # delta-rs keeps the statistics' times to the millisecond, truncated: the file's latest event
            # may lie up to 999 us past its max, and pruning on the truncated value would miss it.
            latest = _micros(high)
            yield LakeFile(relative, uri, int(count or 0), str(date), _micros(low),
                           None if latest is None else latest + STATISTICS_PRECISION_US - 1)

    def batches(self, file: LakeFile, columns: list[str] | None = None, batch_size: int = 65_536
                ) -> Iterator[pa.RecordBatch]:
        """The rows of one data file, in batches (FileNotFoundError when it is gone)."""
        if self.local:
            # One thread: a pool of decoding threads holds buffers of its own (about 40 MB more in verify's scan)
            # for little gain on batches this size.
            for batch in pq.ParquetFile(file.uri).iter_batches(batch_size=batch_size, columns=columns,
                                                                use_threads=False):
                yield _without_views(batch)
            return
        table = self.latest()
        assert table is not None
        dataset = table.to_pyarrow_dataset(file_pruning_predicate=None)
        for fragment in dataset.get_fragments():
            if fragment.path.endswith(file.path):
                # One thread: pyarrow's pool over delta-rs's file system can abort the process at exit.
                for batch in fragment.to_batches(batch_size=batch_size, columns=columns, use_threads=False):
                    yield _without_views(batch)
                return
        raise FileNotFoundError(file.uri)

    # -- writing --------------------------------------------------------------------------------

    def commit(self, tables: dict[str, pa.Table], ranges: dict[str, tuple[int, int]]) -> int:
        """Store a batch read from sources, exactly once; returns the rows newly stored.

        ``tables`` holds the rows read from each source; ``ranges`` maps each source to
        ``(start, next)``: what was read from ``start`` up to (not including) ``next``, dead
        letters included. Rows at positions the table already holds are dropped, so a replayed,
        overlapping or zombie batch adds nothing twice.
        """
        self._refuse_links()
        for _attempt in range(_COMMIT_ATTEMPTS):
            table = self.created()
            parts: list[pa.Table] = []
            transactions: list[Transaction] = []
            for source, (start, nxt) in ranges.items():
                held = None if table is None else table.transaction_version(source)
                if held is not None and held >= nxt:
                    continue  # already committed: by us before a crash, or by the partition's new owner
                if held is not None and start > held:
                    log.warning("%s: positions %d..%d were never read (deleted from the source?); continuing",
                                source, held, start - 1)
                first = start if held is None else max(start, held)
                rows = tables.get(source)
                if rows is not None and rows.num_rows:
                    if first > start:
                        rows = rows.filter(pc.greater_equal(rows["source_offset"], first))
                    parts.append(rows)
                transactions.append(Transaction(source, nxt))
            if not transactions:
                return 0
            data = with_partition(pa.concat_tables(parts)) if parts else table_schema().empty_table()
            try:
                with owner_only():
                    write_deltalake(
                        table, data.cast(table_schema()), mode="append",
                        partition_by=[PARTITION_KEY], storage_options=self.storage_options or None,
                        writer_properties=INGEST_WRITER,
                        commit_properties=CommitProperties(app_transactions=transactions, custom_metadata=_writer()),
                    )
            except CommitFailedError:
                self._cached = None  # another writer committed one of our sources: trim against its version
                continue
            except (DeltaError, OSError) as exc:
                self._cached = None
                raise LakeError(f"could not commit to the lake at {self.uri}: {exc}. Check that it is writable "
                                "(permissions, disk space, object-store credentials) and restart") from exc
            return data.num_rows
        raise LakeError(f"could not commit to {self.uri}: other writers kept committing the same sources; "
                        "is a second materializer group reading the same topic into this lake?")

    def _refuse_links(self) -> None:
        """The lake inside a log directory is written only where it is, never through a planted link."""
        if not self.local or self.uri != str(self.root / EVENTS_DIR):
            return  # a URI the user chose
        events = self.root / EVENTS_DIR
        inside = list(events.iterdir()) if events.is_dir() and not events.is_symlink() else []
        for path in (self.root, events, *inside):
            if path.is_symlink():
                raise LakeError(f"{path} is a symbolic link: secureml-audit never writes the lake through links "
                                f"inside its log directory (one planted there could redirect it). Remove the link "
                                f"(it points to {os.readlink(path)})")

    def created(self) -> DeltaTable:
        """The newest version of the table, created (empty) first if it does not exist yet."""
        return self.latest() or self._create()

    def _create(self) -> DeltaTable:
        """Create the empty table (version 0), or load it when another writer just did.

        Data is never committed by a writer that did not first load a version: a creating
        append could not be fenced against a concurrent one.
        """
        try:
            with owner_only():
                DeltaTable.create(self.uri, table_schema(), partition_by=[PARTITION_KEY], mode="ignore",
                                  storage_options=self.storage_options or None)
        except (DeltaError, OSError) as exc:
            if not self.exists():
                raise LakeError(f"cannot create the lake at {self.uri}: {exc}. Check that the location is "
                                "writable (permissions, bucket, credentials)") from exc
        table = self._load()
        if table is None:
            raise LakeError(f"the lake at {self.uri} vanished right after it was created")
        self._cached = table
        return table

    def reset(self) -> None:
        """Forget everything materialised, for a replay from the start of every source (one commit)."""
        table = self.latest()
        if table is None:
            return
        found = QueryBuilder().register("events", table).execute("SELECT DISTINCT source FROM events")
        names = pa.table(found.read_all())["source"].to_pylist()
        with owner_only():
            write_deltalake(
                table, table_schema().empty_table(), mode="overwrite", partition_by=[PARTITION_KEY],
                storage_options=self.storage_options or None,
                commit_properties=CommitProperties(app_transactions=[Transaction(s, 0) for s in names]),
            )
        self._cached = None

    # -- maintenance ----------------------------------------------------------------------------

    def compaction_due(self, *, today: str | None = None) -> bool:
        """True when a partition is due for compaction (cheap: the snapshot's file list and sizes only)."""
        snapshot = self.snapshot()
        return snapshot.table is not None and _due_partition(
            snapshot, today or dt.datetime.now(dt.UTC).date().isoformat()) is not None

    def compact(self, *, today: str | None = None) -> int:
        """Compact one partition if one is due; returns the number of files it replaced.

        Today's partition (``today``, UTC), once many small files piled up, has them merged into
        bins of up to TARGET_FILE_BYTES, one bin at a time (memory: a bin's writer); larger files
        are left alone. A closed day (before ``today``) with two small files or more, or never
        rewritten in CLUSTER_ORDER, is rewritten whole in that order (see _cluster). Either is one
        Delta commit that changes no data, and concurrent appends are never lost. delta-rs does
        not detect two optimizations of one partition racing each other (both commit, and the rows
        are stored twice), so only the holder of the table's maintenance lease compacts; the other
        instances of a group skip their turn.
        """
        self._refuse_links()
        snapshot = self.snapshot()
        if snapshot.table is None:
            return 0
        today = today or dt.datetime.now(dt.UTC).date().isoformat()
        due = _due_partition(snapshot, today)
        if due is None or not self._take_lease():
            return 0
        try:
            with self._lease_renewed():
                table = self._fresh()
                if due < today:
                    return self._cluster(table, due)
                with owner_only():
                    metrics = table.optimize.compact(partition_filters=[(PARTITION_KEY, "=", due)],
                                                     target_size=TARGET_FILE_BYTES, max_concurrent_tasks=1,
                                                     writer_properties=WRITER)
                return int(metrics.get("numFilesRemoved", 0))
        except CommitFailedError:
            return 0  # a concurrent commit touched the partition: try again next time
        finally:
            self._release_lease()
            self._cached = None

    def _cluster(self, table: DeltaTable, date: str) -> int:
        """Rewrite one closed day in CLUSTER_ORDER, in one commit; returns the files it replaced.

        DuckDB sorts the day's rows within SORT_MEMORY_LIMIT, spilling under log_dir, and the
        writer streams them into files of up to TARGET_FILE_BYTES: memory is the sort's pool and a
        file's writer, whatever the day holds. The commit replaces exactly the files of the version
        it read (an overwrite of the partition): one appended to the day meanwhile makes delta-rs
        refuse it (CommitFailedError), and the day is rewritten next time. The rows are counted on
        their way to the writer; a count other than the version's raises there, before any commit.
        The commit marks the day clustered (an app transaction CLUSTERED + date: the rows it held).
        """
        files = [f for f in self._files(table) if f.date == date]
        expected = sum(f.rows for f in files)
        spill = self.root / SPILL_DIR
        shutil.rmtree(spill, ignore_errors=True)  # a crashed rewrite's
        make_private_dir(spill)
        con = duckdb.connect(config={"threads": 1, "memory_limit": SORT_MEMORY_LIMIT,
                                     "preserve_insertion_order": False, "temp_directory": str(spill)})
        try:
            batches = (batch for f in files for batch in self.batches(f, batch_size=CLUSTER_BATCH_ROWS))
            day = pa.RecordBatchReader.from_batches(self._day_schema(files), batches)
            con.register("day", day)
            if not self.local:  # delta-rs reads an object store, and cannot be re-entered from inside its own writer
                con.execute("CREATE TABLE staged AS SELECT * FROM day")
            order = ", ".join(f'"{column}"' for column in CLUSTER_ORDER)
            ordered = con.sql(f"SELECT * FROM {'day' if self.local else 'staged'} ORDER BY {order}"
                              ).to_arrow_reader(CLUSTER_BATCH_ROWS)

            def counted() -> Iterator[pa.RecordBatch]:
                count = 0
                for batch in ordered:
                    count += batch.num_rows
                    yield from with_partition(pa.Table.from_batches([_without_views(batch)])).cast(
                        table_schema()).to_batches()
                if count != expected:
                    raise LakeError(f"the day {date} held {count} events in its files, not the {expected} its "
                                    f"statistics say: it was not rewritten. Run `secureml-audit verify`")

            with owner_only():  # DuckDB's spill files take no mode
                write_deltalake(table, pa.RecordBatchReader.from_batches(table_schema(), counted()),
                                mode="overwrite", predicate=f"{PARTITION_KEY} = '{date}'",
                                partition_by=[PARTITION_KEY], target_file_size=TARGET_FILE_BYTES,
                                storage_options=self.storage_options or None, writer_properties=WRITER,
                                commit_properties=CommitProperties(
                                    app_transactions=[Transaction(CLUSTERED + date, expected)],
                                    custom_metadata=_writer()))
        except CommitFailedError:
            raise
        except (DeltaError, duckdb.Error, OSError) as exc:
            raise LakeError(f"compaction could not rewrite the day {date} of the lake at {self.uri} in operation "
                            f"order, and changed nothing: {exc}") from exc
        finally:
            con.close()
            shutil.rmtree(spill, ignore_errors=True)
        return len(files)

    def _day_schema(self, files: list[LakeFile]) -> pa.Schema:
        """The columns of a day's data files as batches() yields them (the table's, without the partition)."""
        for batch in self.batches(files[0], batch_size=1):
            return batch.schema
        return pa.schema([f for f in table_schema() if f.name != PARTITION_KEY])

    def _fresh(self) -> DeltaTable:
        self._cached = None
        table = self.latest()
        if table is None:
            raise LakeError(f"the lake at {self.uri} vanished")
        return table

    def _lease_commit(self, table: DeltaTable, held_until: int) -> None:
        """A commit with no rows that records the maintenance lease's expiry (epoch seconds)."""
        with owner_only():
            write_deltalake(
                table, table_schema().empty_table(), mode="append", partition_by=[PARTITION_KEY],
                storage_options=self.storage_options or None,
                commit_properties=CommitProperties(app_transactions=[Transaction(MAINTENANCE_LEASE, held_until)]),
            )

    def _take_lease(self) -> bool:
        """Hold the table's maintenance lease for lease_seconds(), unless another writer holds it.

        The lease is an app transaction: of writers taking it at once, the commit protocol lets
        exactly one through (the others get CommitFailedError), like any source position.
        """
        table = self._fresh()
        now = int(time.time())
        if (table.transaction_version(MAINTENANCE_LEASE) or 0) > now:
            return False
        try:
            self._lease_commit(table, now + lease_seconds())
        except CommitFailedError:
            return False
        finally:
            self._cached = None
        return True

    @contextlib.contextmanager
    def maintenance_lease(self) -> Iterator[bool]:
        """Hold the table's maintenance lease meanwhile (yields False when another writer holds it).

        For other rewrites of old partitions (retention), so that no compaction races them.
        """
        if not self._take_lease():
            yield False
            return
        try:
            with self._lease_renewed():
                yield True
        finally:
            self._release_lease()

    @contextlib.contextmanager
    def _lease_renewed(self) -> Iterator[None]:
        """The maintenance lease, once taken, renewed every third of lease_seconds() while in the block, by a commit
        from a thread of its own: a rewrite of a large day may outlast one lease, and another instance would then take
        it and optimize the same partition (two optimizations of one partition both commit: rows stored twice). A
        holder killed stops renewing, and its lease expires as before."""
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(lease_seconds() / 3):
                try:
                    table = self._load()  # a table object of its own: the block's is not shared across threads
                    if table is not None:
                        self._lease_commit(table, int(time.time()) + lease_seconds())
                except (CommitFailedError, DeltaError, OSError) as exc:  # the next beat tries again
                    log.warning("could not renew the lake's maintenance lease: %s", exc)

        beat = threading.Thread(target=renew, name="secureml-lease", daemon=True)
        beat.start()
        try:
            yield
        finally:
            stop.set()
            beat.join()

    def _release_lease(self) -> None:
        try:
            self._lease_commit(self._fresh(), int(time.time()))
        except (CommitFailedError, DeltaError, OSError) as exc:  # it expires by itself
            log.warning("could not release the lake's maintenance lease (it expires in %ds): %s", lease_seconds(), exc)

    def compact_all(self, *, today: str | None = None) -> int:
        """Compact until nothing is due; returns the files replaced."""
        total = 0
        while merged := self.compact(today=today):
            total += merged
        return total

    def vacuum(self, retention_hours: int = VACUUM_RETENTION_HOURS, *, full: bool = True) -> int:
        """Delete files no version of the last ``retention_hours`` reads; returns how many.

        That includes files a crashed writer left uncommitted (a "full" vacuum): the retention
        keeps them until no writer can still be about to commit them. ``full=False`` deletes only
        files a commit removed (what retention uses to purge expired events at once).
        """
        self._refuse_links()
        table = self.latest()
        if table is None:
            return 0
        removed = table.vacuum(retention_hours=retention_hours, dry_run=False, full=full,
                               enforce_retention_duration=retention_hours >= VACUUM_RETENTION_HOURS)
        return len(removed)
