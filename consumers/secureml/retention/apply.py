"""``retention apply``: delete expired events from the lake in one Delta commit, vacuum them, sign a record.

The commit rewrites the partitions (days) that hold expired events without them.

Memory is bounded by a batch, not by the lake or by what expires: the lake's files are read a
batch at a time and one predicate (DuckDB, on each batch) tells expired rows from kept ones, both
when finding them and when rewriting their partitions. The removed events stream to a file under
the retention folder, DuckDB orders them by (source, offset) within a bounded pool (spilling under
the retention folder too), and their record file and Merkle root are written from that order.

Order of work, so that a crash at any step leaves a lake that verifies or says what to do:
the removed events' file and the record-to-be (``pending.json``) are written, then the
rewrite commits (its commitInfo names the record), then the signed record is stored, then the
removed data files are vacuumed and fully expired embedded-log segments deleted. A crash
between the commit and the record leaves ``pending.json``: the next ``apply`` finds the commit
that names it and completes the record (or drops it when the delete never committed).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, QueryBuilder, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError

from secureml.audit._fs import file_lock, make_private_dir, open_private, owner_only, write_atomically
from secureml.audit.config import resolve_config
from secureml.audit.timeutil import micros_to_iso, now_micros
from secureml.audit.transports.embedded import log_path
from secureml.integrity.exceptions import SigningKeyError
from secureml.integrity.keys import default_key_path, key_id, load_signing_key, sign
from secureml.integrity.merkle import leaf_block
from secureml.integrity.scan import _skeleton as skeleton
from secureml.lake.catalog import ensure_catalog
from secureml.lake.rows import PARTITION_KEY, table_schema, with_partition
from secureml.lake.table import WRITER, Lake, Snapshot
from secureml.retention.exceptions import RetentionError
from secureml.retention.holds import HOLDS_FILE, LOCK_FILE, Hold, held_sql, read_holds, retention_dir
from secureml.retention.policy import RetentionPolicy, load_policy, quote
from secureml.retention.records import (
    COMMIT_KEY,
    FORMAT_VERSION,
    PENDING_FILE,
    REMOVED_SCHEMA,
    RetentionRecord,
    records_dir,
    stored_records,
    write_record,
    write_removed,
)

log = logging.getLogger(__name__)

_ATTEMPTS = 10
LEASE_WAIT_SECONDS = 120.0  # how long apply waits for a compaction holding the maintenance lease
SCAN_BATCH_ROWS = 65_536  # lake rows judged at a time: what memory holds of the lake
SORT_MEMORY_LIMIT = "128MB"  # DuckDB's pool for ordering the removed events; past it, it spills to disk
SPILL_DIR = ".spill"  # in the retention folder (inside log_dir): the removed events before ordering, the sort's spill


@dataclass
class RetentionResult:
    """What one ``apply`` did (or, with ``dry_run``, would do)."""

    events: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    first: str | None = None  # time of the oldest removed event
    last: str | None = None
    dry_run: bool = False
    record: Path | None = None
    signed: bool = False
    table_version_before: int | None = None
    table_version_after: int | None = None
    files_vacuumed: int = 0
    segments_removed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for people."""
        what = ", ".join(f"{n:,} {t}" for t, n in sorted(self.counts.items())) or "nothing"
        if self.dry_run:
            return f"dry run: {self.events:,} events would expire ({what}); nothing was changed"
        if not self.events:
            return "nothing has expired under the policy; the lake is unchanged"
        signed = "signed" if self.signed else "NOT SIGNED (no signing key: the record proves nothing to verify)"
        return (f"expired {self.events:,} events ({what}) from {self.first} to {self.last}; table version "
                f"{self.table_version_before} -> {self.table_version_after}; record {self.record} ({signed}); "
                f"{self.files_vacuumed} data files vacuumed, {len(self.segments_removed)} log segments deleted")


def _signing_key(log_dir: Path) -> Any:
    """The checkpoints' signing key, or None when there is none (the record is then not signed)."""
    path = default_key_path()
    if path.resolve().is_relative_to(log_dir.resolve()):
        raise SigningKeyError(f"the signing key {path} is inside the audit log directory {log_dir}: move it "
                              "elsewhere and set SECUREML_AUDIT_SIGNING_KEY")
    if not path.exists():
        log.warning("no signing key at %s: the retention record is NOT SIGNED, so verify cannot tell this expiry "
                    "from tampering. Create one with `secureml-audit keygen`", path)
        return None
    return load_signing_key(path)


def _positions_sql(table: DeltaTable) -> str:
    """Rows at positions this version's commits consumed, per source (what a concurrent append cannot change)."""
    found = QueryBuilder().register("events", table).execute("SELECT DISTINCT source FROM events")
    sources = pa.table(found.read_all())["source"].to_pylist()
    terms = [f"(source = {quote(s)} AND source_offset < {table.transaction_version(s)})" for s in sorted(sources)
             if table.transaction_version(s) is not None]
    return "(" + " OR ".join(terms) + ")" if terms else "false"


def _duckdb(config: dict[str, Any]) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that prints no progress bar (it would land on the CLI's stdout)."""
    con = duckdb.connect(config=config)
    con.execute("SET enable_progress_bar = false")
    return con


class _Judge:
    """Tells expired rows from kept ones, a batch at a time, with one predicate: the same answer when finding and
    when rewriting."""

    def __init__(self, predicate: str) -> None:
        # One thread: the answers come back in the batch's row order.
        self._con = _duckdb({"threads": 1, "preserve_insertion_order": True})
        self._sql = f"SELECT coalesce(({predicate}), false) AS expired FROM batch"

    def expired(self, batch: pa.RecordBatch) -> pa.Array:
        """True for each row of ``batch`` the predicate expires."""
        self._con.register("batch", pa.Table.from_batches([batch]))
        try:
            return self._con.sql(self._sql).to_arrow_table()["expired"].combine_chunks()
        finally:
            self._con.unregister("batch")

    def close(self) -> None:
        """Release DuckDB."""
        self._con.close()


@dataclass
class _Found:
    """What the scan found, in counts: by event type and by source, the days, the time range."""

    events: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)
    dates: set[str] = field(default_factory=set)
    first: dt.datetime | None = None
    last: dt.datetime | None = None

    def add(self, removed: pa.RecordBatch) -> None:
        """Count a batch of removed rows (REMOVED_SCHEMA)."""
        self.events += removed.num_rows
        for name, into in (("event_type", self.counts), ("source", self.sources)):
            for entry in pc.value_counts(removed[name]).to_pylist():
                into[entry["values"]] = into.get(entry["values"], 0) + entry["counts"]
        days = pc.unique(pc.cast(pc.cast(removed["timestamp"], pa.timestamp("us")), pa.date32())).to_pylist()
        self.dates.update(day.isoformat() for day in days)
        times = pc.min_max(removed["timestamp"])
        low, high = times["min"].as_py(), times["max"].as_py()
        self.first = low if self.first is None else min(self.first, low)
        self.last = high if self.last is None else max(self.last, high)


def _removed_rows(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The skeleton rows (REMOVED_SCHEMA) of lake rows."""
    bones = skeleton(batch, 0)
    return pa.RecordBatch.from_arrays(
        [bones.column(n) if n in bones.schema.names else batch.column(n) for n in REMOVED_SCHEMA.names],
        schema=REMOVED_SCHEMA)


def _find_expired(lake: Lake, snapshot: Snapshot, judge: _Judge, spill: Path | None) -> _Found:
    """Count the expired rows of a version, a batch at a time, and stream their skeletons to ``spill`` (unordered)."""
    found = _Found()
    sink = None if spill is None else os.fdopen(open_private(spill, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb")
    writer = None if sink is None else pq.ParquetWriter(sink, REMOVED_SCHEMA, compression="zstd")
    try:
        for entry in snapshot.files:
            for batch in lake.batches(entry, batch_size=SCAN_BATCH_ROWS):
                expired = batch.filter(judge.expired(batch))
                if not expired.num_rows:
                    continue
                removed = _removed_rows(expired)
                found.add(removed)
                if writer is not None:
                    writer.write_batch(removed)
    finally:
        if writer is not None and sink is not None:
            writer.close()
            sink.close()
    return found


def _write_ordered(root: Path, sequence: int, spill: Path) -> tuple[str, str, str]:
    """The record's removed-events file, in (source, offset) order; returns its name, SHA-256 and Merkle root.

    DuckDB orders the spilled rows in a bounded pool, spilling beside them (under log_dir); the Merkle root
    grows as they go by (memory: its frontier).
    """
    # Imported here: the log tree's module imports this package (retention.positions) at its top.
    from secureml.integrity.logtree import LogFold

    con = _duckdb({"threads": 1, "memory_limit": SORT_MEMORY_LIMIT, "preserve_insertion_order": True,
                   "temp_directory": str(spill.parent / "sort")})
    tree = LogFold()

    def ordered() -> Iterator[pa.RecordBatch]:
        reader = con.sql("SELECT * FROM read_parquet(?) ORDER BY source, source_offset",
                         params=[str(spill)]).to_arrow_reader(SCAN_BATCH_ROWS)
        for batch in reader:
            batch = batch.cast(REMOVED_SCHEMA)
            tree.extend(leaf_block(batch["hash"]))
            yield batch

    try:
        with owner_only():  # DuckDB's spill files take no mode
            name, digest = write_removed(root, sequence, ordered())
    finally:
        con.close()
    return name, digest, tree.root.hex()


def _iso(value: Any) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _finished_segments(lake: Lake, table: DeltaTable, gone: dict[str, int]) -> list[dict[str, Any]]:
    """Embedded-log segments every event of which is removed now, read to their end, whose writer has finished."""
    directory = log_path(lake.log_dir)
    if not lake.local or not directory.is_dir():
        return []
    found = QueryBuilder().register("events", table).execute(
        "SELECT source, count(*) AS n FROM events WHERE source LIKE 'log/%' GROUP BY source")
    held = pa.table(found.read_all()).to_pylist()
    names = [p.name for p in directory.iterdir()]
    segments = []
    for entry in held:
        source, name = entry["source"], entry["source"].removeprefix("log/")
        path = directory / name
        if gone.get(source, 0) != entry["n"] or not path.is_file():
            continue
        size = path.stat().st_size
        if table.transaction_version(source) != size or not _writer_finished(name, names):
            continue
        segments.append({"name": name, "bytes": size})
    return segments


def _writer_finished(name: str, names: list[str]) -> bool:
    """True when the process that wrote a segment (``<time>-<host>-<pid>-<token>.seg``) can write it no more."""
    try:
        stamp_host, pid, _token = name.removesuffix(".seg").rsplit("-", 2)
        stamp, host = stamp_host.split("-", 1)
        process = int(pid)
    except ValueError:
        return False
    prefix = f"-{host}-{pid}-"
    if any(prefix in other and other > name for other in names):
        return True  # the writer rolled over to a newer segment
    if host != socket.gethostname():
        return False  # another host's writer: its liveness cannot be told from here
    try:
        os.kill(process, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def apply_retention(
    log_dir: str | os.PathLike[str] | None = None,
    policy: str | os.PathLike[str] | Mapping[str, Any] | RetentionPolicy | None = None,
    *,
    dry_run: bool = False,
    now: dt.datetime | None = None,
    lake_uri: str | None = None,
    storage_options: dict[str, str] | None = None,
) -> RetentionResult:
    """Delete the events of the lake under ``log_dir`` that expired under ``policy`` and no legal hold keeps.

    ``policy``: a YAML/JSON file, a dict or a RetentionPolicy (default: ``DEFAULT_POLICY``).
    ``now`` is when expiry is judged (default: the current time). With ``dry_run`` only counts.
    """
    rules = load_policy(policy)
    moment = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    directory = resolve_config(log_dir=log_dir, bootstrap_servers="").log_dir
    lake = Lake(directory, uri=lake_uri, storage_options=storage_options)
    if not lake.exists():
        raise RetentionError(f"no lake at {lake.uri}: materialize the events first "
                             f"(`secureml-audit materialize --once --log-dir {directory}`)")
    root = retention_dir(directory)
    key = None if dry_run else _signing_key(directory)
    with file_lock(root / LOCK_FILE):
        holds = read_holds(root / HOLDS_FILE)
        stored = stored_records(root)
        broken = [s for s in stored if s.record is None]
        if broken:
            raise RetentionError(f"the retention record {broken[0].path} is unreadable ({broken[0].problem}): "
                                 "restore it from a backup before applying retention again")
        if dry_run:
            return _apply(lake, root, rules, holds, moment, dry_run, key, stored[-1].record if stored else None)
        deadline = time.monotonic() + LEASE_WAIT_SECONDS
        while True:  # no compaction may rewrite the same partitions meanwhile: hold the maintenance lease
            with lake.maintenance_lease() as held:
                if held:
                    _complete_interrupted(lake, root, key, [s.record for s in stored if s.record is not None])
                    stored = stored_records(root)
                    return _apply(lake, root, rules, holds, moment, dry_run, key,
                                  stored[-1].record if stored else None)
            if time.monotonic() >= deadline:
                raise RetentionError(f"another writer holds the lake's maintenance lease (a compaction) for more "
                                     f"than {LEASE_WAIT_SECONDS:.0f} s: nothing was deleted; try again later")
            time.sleep(1.0)


def _apply(lake: Lake, root: Path, rules: RetentionPolicy, holds: list[Hold], moment: dt.datetime, dry_run: bool,
           key: Any, previous: RetentionRecord | None) -> RetentionResult:
    sequence = previous.sequence + 1 if previous else 0
    for _attempt in range(_ATTEMPTS):
        snapshot = lake.snapshot()
        table = snapshot.table
        assert table is not None and snapshot.version is not None
        before = snapshot.version
        judge = _Judge(f"({rules.expired_sql(moment, 'duckdb')}) AND NOT {held_sql(holds)} AND {_positions_sql(table)}")
        spill = None if dry_run else make_private_dir(root / SPILL_DIR) / f"{sequence:012d}.unordered.parquet"
        try:
            log.info("retention: finding events expired at %s in table version %d", _iso(moment), before)
            found = _find_expired(lake, snapshot, judge, spill)
            result = RetentionResult(found.events, found.counts, dry_run=dry_run, table_version_before=before)
            if found.events:
                assert found.first is not None and found.last is not None
                result.first, result.last = _iso(found.first), _iso(found.last)
            if dry_run or not found.events:
                return result
            assert spill is not None
            segments = _finished_segments(lake, table, found.sources)
            name, digest, root_hash = _write_ordered(root, sequence, spill)
            body = {
                "version": FORMAT_VERSION, "sequence": sequence, "evaluated_at": _iso(moment),
                "prev_record_hash": previous.digest() if previous else "", "policy": rules.to_dict(),
                "holds": [{"kind": h.kind, "value": h.value} for h in holds],
                "events": found.events, "counts": result.counts, "range": {"first": result.first, "last": result.last},
                "table_version_before": before,
                "removed": {"file": name, "sha256": digest, "rows": found.events, "merkle_root": root_hash},
                "segments": segments,
            }
            # Written before the delete: an apply interrupted after it completes the record from this.
            write_atomically(root / PENDING_FILE, json.dumps(body).encode(), 0o600, replace=True)
            log.info("retention: rewriting %d partition(s) without %d expired events, in one commit",
                     len(found.dates), found.events)
            try:
                after = _rewrite(lake, snapshot, found, judge, sequence)
            except CommitFailedError:
                log.info("retention: another writer changed the same partitions meanwhile: judging again")
                continue
            except (DeltaError, OSError, RetentionError) as exc:
                (root / PENDING_FILE).unlink(missing_ok=True)
                raise RetentionError(f"could not delete expired events from {lake.uri}: {exc}. Nothing was deleted; "
                                     "check that the lake is writable and try again") from exc
        finally:
            judge.close()
            shutil.rmtree(root / SPILL_DIR, ignore_errors=True)
        return _finish(lake, root, body, key, after, result)
    raise RetentionError(f"could not delete expired events from {lake.uri}: other writers kept changing the same "
                         "files; try again when compaction is idle")


def _rewrite(lake: Lake, snapshot: Snapshot, found: _Found, judge: _Judge, sequence: int) -> int:
    """Rewrite the partitions holding removed events without them, in one commit; returns the new table version.

    The rows stream from the version's files through the writer, judged again batch by batch
    (memory: a batch; on an object store, the kept rows of those partitions). A rewrite rather
    than a Delta ``delete``: delta-rs's delete writes string-view columns that pyarrow datasets
    then fail to filter. The commit names the record.
    """
    dates = sorted(found.dates)
    files = [f for f in snapshot.files if f.date in found.dates]
    expected = sum(f.rows for f in files) - found.events

    def kept() -> Iterator[pa.RecordBatch]:
        count = 0
        for entry in files:
            for batch in lake.batches(entry, batch_size=SCAN_BATCH_ROWS):
                batch = batch.filter(pc.invert(judge.expired(batch)))
                count += batch.num_rows
                yield from with_partition(pa.Table.from_batches([batch])).cast(table_schema()).to_batches()
        if count != expected:  # raised inside the writer: nothing is committed
            raise RetentionError(f"the partitions {', '.join(dates)} hold {count} events besides the expired ones, "
                                 f"not the {expected} their statistics say")

    assert snapshot.table is not None
    predicate = f"{PARTITION_KEY} IN ({', '.join(quote(d) for d in dates)})"
    # An object store is read through delta-rs, which cannot be re-entered from inside its own writer.
    rows: Iterable[pa.RecordBatch] = kept() if lake.local else list(kept())
    with owner_only():
        write_deltalake(snapshot.table, pa.RecordBatchReader.from_batches(table_schema(), rows), mode="overwrite",
                        predicate=predicate, partition_by=[PARTITION_KEY], storage_options=lake.storage_options or None,
                        writer_properties=WRITER, commit_properties=CommitProperties(
                            custom_metadata={COMMIT_KEY: str(sequence)}))
    return snapshot.table.version()


def _finish(lake: Lake, root: Path, body: dict[str, Any], key: Any, after: int,
            result: RetentionResult) -> RetentionResult:
    """Sign and store the record of a committed delete, then purge: vacuum, delete segments, rebuild the catalog."""
    body = {**body, "created_at": micros_to_iso(now_micros()), "table_version_after": after,
            "key_id": key_id(key.public_key()) if key is not None else ""}
    unsigned = RetentionRecord(body)
    record = RetentionRecord(body, sign(key, unsigned.signed_bytes()) if key is not None else "")
    result.record, result.signed, result.table_version_after = write_record(root, record), key is not None, after
    (root / PENDING_FILE).unlink(missing_ok=True)
    result.files_vacuumed = lake.vacuum(0, full=False)
    result.segments_removed = _remove_segments(lake, body["segments"])
    ensure_catalog(lake)
    log.info("retention: %s", result.summary())
    return result


def _complete_interrupted(lake: Lake, root: Path, key: Any, stored: list[RetentionRecord]) -> None:
    """Finish an apply interrupted between its delete commit and its record (drop one that never deleted)."""
    path = root / PENDING_FILE
    try:
        body = json.loads(path.read_text("utf-8"))
        sequence = int(body["sequence"])
    except FileNotFoundError:
        return
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RetentionError(f"{path} (an interrupted retention apply) is unreadable ({exc}): run `secureml-audit "
                             "verify`; remove the file once the lake is known to be intact") from None
    if any(r.sequence == sequence for r in stored):
        path.unlink()
        return
    table = lake.latest()
    assert table is not None
    committed = [c for c in table.history() if c.get(COMMIT_KEY) == str(sequence)]
    if not committed:  # the delete never happened
        log.info("retention: dropping an apply that was interrupted before it deleted anything")
        (records_dir(root) / str(body["removed"]["file"])).unlink(missing_ok=True)
        path.unlink()
        return
    log.warning("retention: completing record #%d of an apply interrupted after its delete commit", sequence)
    result = RetentionResult(int(body["events"]), dict(body["counts"]), body["range"]["first"], body["range"]["last"],
                             table_version_before=int(body["table_version_before"]))
    _finish(lake, root, body, key, int(committed[0]["version"]), result)


def _remove_segments(lake: Lake, segments: list[dict[str, Any]]) -> list[str]:
    """Delete the segments a record lists (already materialised and wholly expired)."""
    removed = []
    for entry in segments:
        path = log_path(lake.log_dir) / entry["name"]
        try:
            path.unlink()
            removed.append(entry["name"])
        except FileNotFoundError:
            pass
    return removed
