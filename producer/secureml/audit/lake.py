"""The Parquet lake under ``log_dir/lake``: manifest, exactly-once commits, compaction, catalog.

Layout::

    log_dir/lake/events/event_date=YYYY-MM-DD/<source>-<first>-<last>.parquet   (level 0)
    log_dir/lake/events/event_date=YYYY-MM-DD/compacted-L<n>-<digest>.parquet    (merged, sorted)
    log_dir/lake/_manifest.json   live files + the next position to read from every source
    log_dir/audit.duckdb          catalog for the duckdb CLI: views ``events`` and ``operations``

The manifest is the lake's tracking record: a commit renames its Parquet files into place and
replaces the manifest, both under one lock, so the files a reader takes from a manifest and
the positions a restarted materializer resumes from always agree. A batch replayed after a
crash starts at the manifest's position and overwrites the same deterministic file names, so
nothing is ever stored twice. Compaction merges files into one sorted by (operation_name,
timestamp) and swaps them in the manifest in one step; superseded files move to
``log_dir/.trash`` and are deleted after a grace period, so a reader holding an older manifest
can still finish its query.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import secrets
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from secureml.audit.codec import arrow_schema
from secureml.audit.exceptions import LakeError
from secureml.audit.transports.embedded import make_private_dir

LAKE_DIR = "lake"
EVENTS_DIR = "events"
MANIFEST = "_manifest.json"
LOCK_FILE = "_writer.lock"
TRASH_DIR = ".trash"
CATALOG = "audit.duckdb"
PARTITION_KEY = "event_date"
COMPACTION_FANOUT = 8  # this many files of one level in a date partition merge into one
MAX_LEVEL = 3
TRASH_GRACE_SECONDS = 300.0
SORT_KEYS = ("operation_name", "timestamp", "seq")
# Small row groups let a query for one operation and time range skip most of a sorted file.
ROW_GROUP_ROWS = 16_384
_thread_locks: dict[Path, threading.Lock] = {}
_thread_locks_guard = threading.Lock()
_DAY = 86_400_000_000  # microseconds
_EPOCH_DATE = dt.date(1970, 1, 1)


def lake_schema() -> pa.Schema:
    """Columns of every Parquet file: the event fields, then where the event was read from."""
    return arrow_schema().append(pa.field("source", pa.large_string(), nullable=False)).append(
        pa.field("source_offset", pa.int64(), nullable=False)
    )


@dataclass(frozen=True)
class LakeFile:
    """One live Parquet file of the lake."""

    path: str  # relative to log_dir/lake
    rows: int
    level: int
    date: str
    min_ts: int
    max_ts: int


@dataclass
class Manifest:
    """The lake's tracking record: live files and the next position of every source."""

    generation: int = 0
    files: list[LakeFile] = field(default_factory=list)
    positions: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        """Serialised form, written atomically."""
        return json.dumps(
            {"format": 1, "generation": self.generation, "positions": self.positions,
             "files": [asdict(f) for f in self.files]},
            indent=0,
        )

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse a manifest written by to_json."""
        raw = json.loads(text)
        return cls(raw["generation"], [LakeFile(**f) for f in raw["files"]], dict(raw["positions"]))


@contextlib.contextmanager
def file_lock(path: Path, *, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock on a file, against other processes (flock) and other threads.

    Yields False instead of waiting when ``blocking`` is off and someone else holds it.
    """
    make_private_dir(path.parent)
    with _thread_locks_guard:
        thread_lock = _thread_locks.setdefault(path, threading.Lock())
    if not thread_lock.acquire(blocking=blocking):
        yield False
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the flock
        thread_lock.release()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _slug(source: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", ".", source).strip(".")


def _write_parquet(table: pa.Table, path: Path) -> None:
    """Write a table owner-only and durable (the caller renames it into place)."""
    pq.write_table(table, path, compression="zstd", row_group_size=ROW_GROUP_ROWS)
    os.chmod(path, 0o600)
    with open(path, "rb") as f:
        os.fsync(f.fileno())


class Lake:
    """Reader and writer of one lake. Writers serialise on a file lock; readers never lock."""

    def __init__(self, log_dir: str | os.PathLike[str]) -> None:
        self.log_dir = Path(log_dir)
        self.root = self.log_dir / LAKE_DIR
        self.events_dir = self.root / EVENTS_DIR
        self.manifest_path = self.root / MANIFEST
        self.trash = self.log_dir / TRASH_DIR

    # -- reading --------------------------------------------------------------------------------

    def snapshot(self) -> Manifest:
        """The current manifest (empty when nothing was materialised yet)."""
        try:
            return Manifest.from_json(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return Manifest()
        except (ValueError, KeyError, TypeError) as exc:
            raise LakeError(
                f"the lake manifest {self.manifest_path} is unreadable ({exc}); rebuild the lake with "
                "`secureml-audit materialize --replay`"
            ) from exc

    def paths(self, manifest: Manifest, start_us: int | None = None, end_us: int | None = None) -> list[str]:
        """Absolute paths of the live files whose time range overlaps [start_us, end_us]."""
        return [
            str(self.root / f.path)
            for f in manifest.files
            if (start_us is None or f.max_ts >= start_us) and (end_us is None or f.min_ts <= end_us)
        ]

    # -- writing --------------------------------------------------------------------------------

    def locked(self, *, blocking: bool = True) -> contextlib.AbstractContextManager[bool]:
        """Hold the writer lock (yields False when not blocking and another writer holds it)."""
        return file_lock(self.root / LOCK_FILE, blocking=blocking)

    def _write_manifest(self, manifest: Manifest) -> None:
        tmp = self.root / f"{MANIFEST}.tmp-{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(manifest.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.manifest_path)
        _fsync_dir(self.root)

    def commit(self, tables: dict[str, pa.Table], ranges: dict[str, tuple[int, int]]) -> int:
        """Store a batch read from sources, exactly once; returns the rows newly stored.

        ``tables`` holds the rows read from each source; ``ranges`` maps each source to
        ``(start, next)``: what was read from ``start`` up to (not including) ``next``, dead
        letters included. Rows at positions the lake already holds are dropped, so a replayed
        or overlapping batch adds nothing twice.
        """
        for _attempt in range(5):
            base = self.snapshot()
            staged = self._stage(tables, ranges, base.positions)
            with self.locked():
                current = self.snapshot()
                if any(current.positions.get(s) != base.positions.get(s) for s in ranges):
                    for tmp, _final, _entry in staged:
                        tmp.unlink(missing_ok=True)
                    continue  # another writer advanced one of our sources: trim again
                for tmp, final, _entry in staged:
                    os.replace(tmp, final)
                for directory in {final.parent for _t, final, _e in staged}:
                    _fsync_dir(directory)
                positions = dict(current.positions)
                for source, (_start, nxt) in ranges.items():
                    positions[source] = max(nxt, positions.get(source, nxt))
                live = {f.path for f in current.files}
                new_files = [entry for _t, _f, entry in staged if entry.path not in live]
                self._write_manifest(
                    Manifest(current.generation + 1, current.files + new_files, positions)
                )
                return sum(entry.rows for entry in new_files)
        raise LakeError(f"could not commit to {self.root}: other writers kept advancing the same sources")

    def _stage(
        self, tables: dict[str, pa.Table], ranges: dict[str, tuple[int, int]], positions: dict[str, int]
    ) -> list[tuple[Path, Path, LakeFile]]:
        """Write the new part of a batch to temporary files: one per (source, date)."""
        staged: list[tuple[Path, Path, LakeFile]] = []
        for source, (start, nxt) in ranges.items():
            held = positions.get(source)
            first = start if held is None else max(start, held)
            if held is not None and start > held:
                print(f"secureml-audit: {source}: positions {held}..{start - 1} were never read "
                      "(deleted from the source?); continuing", file=sys.stderr)
            rows = tables.get(source)
            if nxt <= first or rows is None or rows.num_rows == 0:
                continue  # nothing new, or positions advanced by dead letters only
            if first > start:
                rows = rows.filter(pc.greater_equal(rows["source_offset"], first))
            micros = rows["timestamp"].cast(pa.int64())
            bounds = pc.min_max(micros)
            low, high = bounds["min"].as_py(), bounds["max"].as_py()
            if low is None:
                continue
            days = range(low // _DAY, high // _DAY + 1)
            for day in days:
                part = rows if len(days) == 1 else rows.filter(
                    pc.equal(pc.divide(micros, pa.scalar(_DAY, pa.int64())), day))
                if part.num_rows == 0:
                    continue
                date = (_EPOCH_DATE + dt.timedelta(days=day)).isoformat()
                directory = make_private_dir(self.events_dir / f"{PARTITION_KEY}={date}")
                final = directory / f"{_slug(source)}-{first:020d}-{nxt - 1:020d}.parquet"
                tmp = directory / f"{final.name}.tmp-{secrets.token_hex(4)}"
                _write_parquet(part, tmp)
                span = pc.min_max(part["timestamp"].cast(pa.int64()))
                entry = LakeFile(
                    str(final.relative_to(self.root)), part.num_rows, 0, date,
                    span["min"].as_py(), span["max"].as_py(),
                )
                staged.append((tmp, final, entry))
        return staged

    def reset(self) -> None:
        """Forget everything materialised (for a replay from the start of every source)."""
        with self.locked():
            current = self.snapshot()
            self._retire([f.path for f in current.files], current.generation)
            self._write_manifest(Manifest(current.generation + 1, [], {}))

    def remove_orphans(self) -> int:
        """Delete Parquet files no manifest names (left by a crash between write and commit)."""
        removed = 0
        with self.locked():
            live = {f.path for f in self.snapshot().files}
            if not self.events_dir.is_dir():
                return 0
            for path in self.events_dir.glob("*/*"):
                relative = str(path.relative_to(self.root))
                stale_tmp = ".tmp-" in path.name and time.time() - path.stat().st_mtime > 600
                if (path.suffix == ".parquet" and relative not in live) or stale_tmp:
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed

    # -- compaction -----------------------------------------------------------------------------

    def _plan_compaction(self, manifest: Manifest, today: str) -> tuple[list[LakeFile], int] | None:
        by_date: dict[str, list[LakeFile]] = {}
        for f in manifest.files:
            by_date.setdefault(f.date, []).append(f)
        for date, files in sorted(by_date.items()):
            if date < today and len(files) > 1:
                return files, MAX_LEVEL  # a closed partition: one large sorted file
            for level in range(MAX_LEVEL):
                same = [f for f in files if f.level == level]
                if len(same) >= COMPACTION_FANOUT:
                    return same, level + 1
        return None

    def compact(self, *, today: str | None = None) -> int:
        """Merge one group of small files if one is due; returns the number of files merged."""
        import duckdb

        manifest = self.snapshot()
        plan = self._plan_compaction(manifest, today or dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"))
        if plan is None:
            return 0
        inputs, level = plan
        digest = hashlib.sha1("|".join(sorted(f.path for f in inputs)).encode()).hexdigest()[:20]
        directory = self.events_dir / f"{PARTITION_KEY}={inputs[0].date}"
        final = directory / f"compacted-L{level}-{digest}.parquet"
        tmp = directory / f"{final.name}.tmp-{secrets.token_hex(4)}"
        sources = [str(self.root / f.path) for f in inputs]
        con = duckdb.connect(config={"threads": 2, "memory_limit": "2GB"})
        try:
            con.execute("SET preserve_insertion_order = false")
            con.execute(
                f"COPY (SELECT * FROM read_parquet(?, hive_partitioning = false, union_by_name = true) "
                f"ORDER BY {', '.join(SORT_KEYS)}) TO '{tmp}' "
                f"(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {ROW_GROUP_ROWS})",
                [sources],
            )
        finally:
            con.close()
        os.chmod(tmp, 0o600)
        rows = pq.ParquetFile(tmp).metadata.num_rows
        expected = sum(f.rows for f in inputs)
        if rows != expected:
            tmp.unlink(missing_ok=True)
            raise LakeError(f"compaction of {len(inputs)} files produced {rows} rows, expected {expected}")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        entry = LakeFile(
            str(final.relative_to(self.root)), rows, level, inputs[0].date,
            min(f.min_ts for f in inputs), max(f.max_ts for f in inputs),
        )
        with self.locked():
            current = self.snapshot()
            live = {f.path for f in current.files}
            if not all(f.path in live for f in inputs):
                tmp.unlink(missing_ok=True)  # someone else compacted these meanwhile
                return 0
            os.replace(tmp, final)
            _fsync_dir(directory)
            gone = {f.path for f in inputs}
            remaining = [f for f in current.files if f.path not in gone]
            self._write_manifest(Manifest(current.generation + 1, remaining + [entry], current.positions))
            self._retire(sorted(gone), current.generation + 1)
        return len(inputs)

    def compact_all(self) -> int:
        """Compact until nothing is due; returns the number of files merged."""
        merged = total = 0
        while (merged := self.compact()) > 0:
            total += merged
        return total

    def _retire(self, relative_paths: list[str], generation: int) -> None:
        """Move superseded files out of the lake; delete those retired long ago."""
        make_private_dir(self.trash)
        for relative in relative_paths:
            source = self.root / relative
            target = self.trash / f"{generation:08d}-{source.parent.name}-{source.name}"
            with contextlib.suppress(FileNotFoundError):
                os.replace(source, target)
        cutoff = time.time() - TRASH_GRACE_SECONDS
        for old in self.trash.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if old.stat().st_mtime < cutoff:
                    old.unlink()

    # -- catalog ----------------------------------------------------------------------------------

    def ensure_catalog(self) -> Path | None:
        """Create log_dir/audit.duckdb with views over the lake, for the duckdb CLI.

        Written once (its views read the lake directory), so no long-lived writer ever holds
        the file. Returns None when a user has it open for writing right now.
        """
        import duckdb

        path = self.log_dir / CATALOG
        glob = str((self.events_dir / "*" / "*.parquet").resolve())
        if path.exists():
            return path
        if not any(self.events_dir.glob("*/*.parquet")):
            return None
        tmp = path.with_name(f".{CATALOG}.tmp-{secrets.token_hex(4)}")
        try:
            con = duckdb.connect(str(tmp))
        except duckdb.Error:
            return None
        try:
            con.execute(
                f"CREATE VIEW events AS SELECT * FROM read_parquet('{glob}', hive_partitioning = true, "
                "union_by_name = true)"
            )
            con.execute(OPERATIONS_VIEW_SQL)
        finally:
            con.close()
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        return path


OPERATIONS_VIEW_SQL = """
CREATE VIEW operations AS
SELECT
    operation_id,
    any_value(operation_name) AS operation_name,
    min(operation_start) AS start_time,
    max(timestamp) FILTER (WHERE event_type = 'audit_closed') AS end_time,
    any_value(status) FILTER (WHERE event_type = 'audit_closed') AS status,
    count(*) AS events,
    max(seq) AS last_seq,
    list(DISTINCT "user") FILTER (WHERE "user" IS NOT NULL) AS users,
    any_value(regulations) AS regulations
FROM events
GROUP BY operation_id
"""


def events_table(sources: list[str], offsets: list[int], versions: list[int], values: list[bytes]) -> pa.Table:
    """Decode sealed Avro messages into lake rows (event fields + source + source_offset)."""
    from secureml.audit.codec import decode_batch

    if len(set(versions)) <= 1:
        decoded = decode_batch(values, versions[0] if versions else 1)
        order = None
    else:  # several writer versions: decode each group, then restore the original order
        groups: dict[int, list[int]] = {}
        for i, v in enumerate(versions):
            groups.setdefault(v, []).append(i)
        decoded = pa.concat_tables(decode_batch([values[i] for i in idx], v) for v, idx in groups.items())
        order = [i for idx in groups.values() for i in idx]
    source_column = (
        pa.repeat(pa.scalar(sources[0], pa.large_string()), len(sources))
        if sources and sources.count(sources[0]) == len(sources) else pa.array(sources, pa.large_string())
    )
    table = decoded.append_column(lake_schema().field("source"), source_column)
    table = table.append_column(lake_schema().field("source_offset"), pa.array(offsets, pa.int64()))
    if order is not None:
        table = table.take(pa.array(sorted(range(len(order)), key=order.__getitem__)))
    return table
