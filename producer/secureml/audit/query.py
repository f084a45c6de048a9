"""Reading audit events back: ``get_audit_logs``, and ``connect`` for SQL over the whole lake.

Readers never lock. They take the live files from the lake's manifest and add the part of
the embedded log not yet materialised, so in embedded mode every event logged before the
call is visible at once, from any process.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from pathlib import Path
from typing import Any, Literal

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from secureml.audit.codec import rejection
from secureml.audit.config import resolve_config
from secureml.audit.events import EVENT_FIELDS, fields_of
from secureml.audit.exceptions import AuditValidationError
from secureml.audit.lake import PARTITION_KEY, Lake, events_table, lake_schema
from secureml.audit.schema import JSON_FIELDS, TIMESTAMP_FIELDS
from secureml.audit.timeutil import parse_time
from secureml.audit.transports.embedded import LogRecord, list_segments, read_segment

ENVELOPE = (
    "event_id", "operation_id", "operation_name", "operation_start", "seq", "event_type", "level",
    "timestamp", "user", "regulations", "context", "producer_host", "producer_pid", "producer_version",
    "schema_version", "prev_hash", "hash",
)
# Beyond this many unmaterialised embedded events, a reader materialises them first (if no
# other writer is busy), so queries stay fast without a separate materializer process.
AUTO_MATERIALIZE_EVENTS = 20_000
ORDER_BY = "timestamp, seq, operation_id"
ALERTS_FILE = Path("alerts") / "alerts.jsonl"
_ISO_UTC = "%Y-%m-%dT%H:%M:%S+00:00"  # %S carries the microseconds of a timestamp[us]
_PAYLOAD = {event_type: fields_of(event_type) for event_type in EVENT_FIELDS}
Output = Literal["dicts", "arrow", "pandas", "polars"]

_local = threading.local()


def _log_dir(log_dir: str | os.PathLike[str] | None) -> Path:
    return resolve_config(log_dir=log_dir, bootstrap_servers="").log_dir


def embedded_tail(log_dir: Path, positions: dict[str, int]) -> pa.Table:
    """Events of the embedded log past the lake's positions, decoded (corrupt records left out)."""
    sources: list[str] = []
    offsets: list[int] = []
    versions: list[int] = []
    values: list[bytes] = []
    for segment in list_segments(log_dir):
        source = f"log/{segment.name}"
        start = positions.get(source, 0)
        if segment.stat().st_size <= start:
            continue
        for record in read_segment(segment, start):
            if isinstance(record, LogRecord) and rejection(record.version, record.value) is None:
                sources.append(source)
                offsets.append(record.offset)
                versions.append(record.version)
                values.append(record.value)
    if not values:
        return lake_schema().empty_table()
    return events_table(sources, offsets, versions, values)


def _pending_embedded(log_dir: Path, positions: dict[str, int]) -> int:
    return sum(max(0, s.stat().st_size - positions.get(f"log/{s.name}", 0)) for s in list_segments(log_dir))


def _connection() -> duckdb.DuckDBPyConnection:
    con = getattr(_local, "con", None)
    if con is None:
        con = duckdb.connect(config={"threads": 2})
        con.execute("SET TimeZone = 'UTC'")
        _local.con = con
    return con


def _sources(log_dir: Path, start_us: int | None = None, end_us: int | None = None) -> tuple[list[str], pa.Table]:
    """Live lake files overlapping the time range, and the unmaterialised embedded tail."""
    lake = Lake(log_dir)
    manifest = lake.snapshot()
    # ~200 bytes per event on disk: materialise a large tail instead of decoding it every time.
    if _pending_embedded(log_dir, manifest.positions) > AUTO_MATERIALIZE_EVENTS * 200:
        from secureml.materializer import materialize_embedded

        if materialize_embedded(log_dir, blocking=False) is not None:
            manifest = lake.snapshot()
    return lake.paths(manifest, start_us, end_us), embedded_tail(log_dir, manifest.positions)


def _union_sql(files: list[str], con: duckdb.DuckDBPyConnection, tail: pa.Table, *, hive: bool) -> str:
    """SQL for all events: lake files UNION ALL the embedded tail."""
    con.register("_tail_events", tail)
    tail_sql = "SELECT * FROM _tail_events"
    if hive:
        tail_sql = f"SELECT *, CAST(\"timestamp\" AS DATE) AS {PARTITION_KEY} FROM _tail_events"
    if not files:
        return tail_sql
    listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    lake_sql = (
        f"SELECT * FROM read_parquet([{listed}], union_by_name = true, "
        f"hive_partitioning = {'true' if hive else 'false'}"
        + (f", hive_types = {{'{PARTITION_KEY}': DATE}})" if hive else ")")
    )
    return f"{lake_sql} UNION ALL BY NAME {tail_sql}"


def connect(log_dir: str | os.PathLike[str] | None = None) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB connection with a view ``events`` over every event of the lake.

    The view is a snapshot: call connect() again to see events logged later. Columns are the
    event fields (timestamps as TIMESTAMPTZ, free-form fields as JSON text), ``source``,
    ``source_offset`` and ``event_date``. When ``log_dir/alerts/alerts.jsonl`` exists there is
    also a table ``alerts`` (one row per compliance alert).
    """
    directory = _log_dir(log_dir)
    files, tail = _sources(directory)
    con = duckdb.connect(config={"threads": 2})
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"CREATE VIEW events AS {_union_sql(files, con, tail, hive=True)}")
    alerts = directory / ALERTS_FILE
    if alerts.is_file() and alerts.stat().st_size:
        # The alerter's record in embedded mode (or its jsonl sink pointed here in Kafka mode).
        path = str(alerts).replace("'", "''")
        con.execute(
            f"CREATE TABLE alerts AS SELECT * FROM read_json_auto('{path}', format = 'newline_delimited', "
            "ignore_errors = true)"
        )
    return con


def _filters(
    operation_id: str | None,
    operation_name: str | None,
    start: dt.datetime | None,
    end: dt.datetime | None,
    event_type: str | list[str] | None,
    user: str | None,
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (("operation_id", operation_id), ("operation_name", operation_name), ('"user"', user)):
        if value is not None:
            if not isinstance(value, str):
                raise AuditValidationError(column.strip('"'), f"must be a string, got {type(value).__name__}")
            clauses.append(f"{column} = ?")
            params.append(value)
    if event_type is not None:
        types = [event_type] if isinstance(event_type, str) else list(event_type)
        clauses.append("event_type IN (SELECT unnest(?))")
        params.append(types)
    if start is not None:
        clauses.append('"timestamp" >= ?')
        params.append(start)
    if end is not None:
        clauses.append('"timestamp" <= ?')
        params.append(end)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _to_micros(value: dt.datetime | None) -> int | None:
    if value is None:
        return None
    return (value - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


def query_events(
    operation_id: str | None = None,
    operation_name: str | None = None,
    start_time: str | dt.datetime | None = None,
    end_time: str | dt.datetime | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    *,
    event_type: str | list[str] | None = None,
    user: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> pa.Table:
    """Matching events as an Arrow table in time order (then seq), with every lake column."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise AuditValidationError("limit", "must be an integer >= 0")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise AuditValidationError("offset", "must be an integer >= 0")
    start, end = parse_time(start_time, "start_time"), parse_time(end_time, "end_time")
    where, params = _filters(operation_id, operation_name, start, end, event_type, user)
    directory = _log_dir(log_dir)
    page = (f" LIMIT {limit}" if limit is not None else "") + (f" OFFSET {offset}" if offset else "")
    for attempt in range(3):
        files, tail = _sources(directory, _to_micros(start), _to_micros(end))
        con = _connection()
        sql = f"SELECT * FROM ({_union_sql(files, con, tail, hive=False)}){where} ORDER BY {ORDER_BY}{page}"
        try:
            return con.sql(sql, params=params).to_arrow_table()
        except duckdb.IOException:
            if attempt == 2:
                raise  # files keep vanishing: compaction cannot be that busy
            # a compaction retired a file after we read the manifest: read it again
        finally:
            con.unregister("_tail_events")
    raise AssertionError("unreachable")


def _to_logs(table: pa.Table) -> list[dict[str, Any]]:
    """Rows as the user guide's log dicts: envelope plus the payload fields of each event type.

    Converted column by column (timestamps formatted by Arrow), which is several times faster
    than building a dict of every column for every row first.
    """
    if table.num_rows == 0:
        return []
    for name in TIMESTAMP_FIELDS:
        index = table.schema.get_field_index(name)
        table = table.set_column(index, name, pc.strftime(table[name], format=_ISO_UTC))
    columns = table.to_pydict()
    json_loads = json.loads
    envelope = [(name, columns[name]) for name in ENVELOPE]
    logs = []
    for i, event_type in enumerate(columns["event_type"]):
        log = {name: values[i] for name, values in envelope}
        for name in _PAYLOAD.get(event_type) or fields_of(event_type):
            value = columns[name][i]
            log[name] = json_loads(value) if value is not None and name in JSON_FIELDS else value
        log["context"] = json_loads(log["context"])
        logs.append(log)
    return logs


def get_audit_logs(
    operation_id: str | None = None,
    operation_name: str | None = None,
    start_time: str | dt.datetime | None = None,
    end_time: str | dt.datetime | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    *,
    event_type: str | list[str] | None = None,
    user: str | None = None,
    limit: int | None = None,
    offset: int = 0,
    output: Output = "dicts",
) -> Any:
    """Audit events matching every given filter, in time order (then seq).

    ``operation_name`` matches exactly; naive times are UTC. The default output is a list of
    dicts: the envelope (``event_type``, ``timestamp`` as UTC ISO 8601 text, ``operation_id``,
    ``seq``, ``user``, ``regulations``, ``context`` as a dict, ...) and the logging call's
    arguments under their own names. ``output='arrow' | 'pandas' | 'polars'`` returns a table
    with every column instead; ``limit``/``offset`` page through large results.
    """
    table = query_events(
        operation_id, operation_name, start_time, end_time, log_dir,
        event_type=event_type, user=user, limit=limit, offset=offset,
    )
    if output == "dicts":
        return _to_logs(table)
    if output == "arrow":
        return table
    if output == "pandas":
        return table.to_pandas()
    if output == "polars":
        import polars as pl

        return pl.from_arrow(table)
    raise AuditValidationError("output", "must be one of 'dicts', 'arrow', 'pandas', 'polars'")


def count_events(log_dir: str | os.PathLike[str] | None = None) -> int:
    """Number of events stored: rows of the lake plus the unmaterialised embedded tail."""
    directory = _log_dir(log_dir)
    manifest = Lake(directory).snapshot()
    return sum(f.rows for f in manifest.files) + embedded_tail(directory, manifest.positions).num_rows
