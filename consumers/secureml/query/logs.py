"""Reading audit events back: ``get_audit_logs``, and ``connect`` for SQL over the whole lake.

Readers never lock and never write. They read exactly one version of the Delta table (the
newest, or ``as_of`` a version or time) and add the part of the embedded log not yet
materialised, so in embedded mode every event logged before the call is visible at once,
from any process.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import gc
import importlib.util
import itertools
import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from secureml.audit import accelerator
from secureml.audit.config import resolve_config
from secureml.audit.events import EVENT_FIELDS, MAX_LONG, envelope_fields, fields_of
from secureml.audit.exceptions import AuditValidationError
from secureml.audit.privacy.reveal import REVEALABLE_FIELDS, Revealer
from secureml.audit.schema import JSON_FIELDS, TIMESTAMP_FIELDS
from secureml.audit.transports.embedded import list_segments
from secureml.lake.catalog import events_sql
from secureml.lake.operation_index import OperationIndex
from secureml.lake.rows import PARTITION_KEY, lake_schema
from secureml.lake.table import ROW_GROUP_ROWS, Lake, Snapshot
from secureml.query.filters import Selection, select_events
from secureml.query.privacy import (
    RevealedRows,
    personal_columns,
    release_unused,
    reveal_logs,
    reveal_parsed_rows,
    reveal_table,
    revealed_view_sql,
    revealer_for,
    stored_forms,
)
from secureml.stream.accept import accepted_events
from secureml.stream.sources import EmbeddedSource, Item

ENVELOPE = envelope_fields()
# Beyond this many unmaterialised embedded events, a reader materialises them first (if no
# other writer is busy), so queries stay fast without a separate materializer process.
AUTO_MATERIALIZE_EVENTS = 20_000
ORDER = (("timestamp", "ascending"), ("seq", "ascending"), ("operation_id", "ascending"))
ALERTS_FILE = Path("alerts") / "alerts.jsonl"
_PAYLOAD = {event_type: fields_of(event_type) for event_type in EVENT_FIELDS}
Output = Literal["dicts", "arrow", "pandas", "polars"]
OUTPUTS = ("dicts", "arrow", "pandas", "polars")

_local = threading.local()
# The accelerator's dict conversion (native/src/rows.rs: the same dicts in 0.66-0.87x the CPU time), or None.
_native_log_dicts = None if accelerator.native is None else accelerator.native.log_dicts
_native_pick = None if accelerator.native is None else accelerator.native.pick
# Below this many rows of one event type, Arrow's own row conversion costs less than the column-wise
# one (its search for columns equal in every row, and two or three Arrow calls per column).
_TEMPLATE_MIN_ROWS = 64
# Sharing repeated values (``_shared_values``) pays in large results, where allocating an object per
# row dominates; below this many rows its Arrow calls cost more than they save (measured at 2.5k rows).
_SHARE_MIN_ROWS = 10_000
# From this many rows on, the new dicts skip the young collections (``_to_logs``): below, the pass over them
# costs little, and would not be worth moving the process's other young objects to the oldest generation.
_SETTLE_MIN_ROWS = 10_000
# Rows per part of a whole result read as dicts (``_streamed_logs``): DuckDB reads the next parts on its threads
# while the dicts of one are made, but not while one pass holds the GIL long (parts of 128k rows waited for DuckDB
# 10x longer); the accelerator's value caches start again with each part (JSON texts parsed stay: ``JsonCache``).
# DuckDB gives the result in batches of a row group of the lake's files (``ROW_GROUP_ROWS``, when fewer), each made by
# one of its threads: a batch of two row groups waited for the other thread's too, and the first part, of the first
# batches to hold that many rows, came later (a 100k-row query: 5-6% faster, a 1M-row one ~2%).
STREAM_ROWS = 32_768
# Rows looked at to guess whether a column's values repeat enough to be shared.
_PROBE_ROWS = 256


def _log_dir(log_dir: str | os.PathLike[str] | None, where: str = "get_audit_logs") -> Path:
    if log_dir is not None and not isinstance(log_dir, (str, os.PathLike)):
        raise AuditValidationError("log_dir", f"must be a path, got {type(log_dir).__name__}", where=where)
    directory = resolve_config(log_dir=log_dir, bootstrap_servers="").log_dir
    if directory.exists() and not directory.is_dir():
        raise AuditValidationError("log_dir", f"{directory} is a file, not a directory: give the folder the "
                                   "audit trail logs to (its AuditTrail's log_dir)", where=where)
    return directory


def _position_argument(value: object, field: str, where: str, *, optional: bool) -> None:
    """A limit or offset: an integer from 0 to 2**63 - 1 (None too when optional)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LONG:
        raise AuditValidationError(field, f"must be an integer from 0 to {MAX_LONG}, got {value!r:.40}", where=where)


def _as_of_argument(value: object, where: str) -> None:
    """``as_of``: a Delta version number (an int >= 0), an ISO 8601 time, or a datetime."""
    if value is None or isinstance(value, (str, dt.datetime)):
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LONG:
        raise AuditValidationError("as_of", "must be a table version (an integer >= 0), an ISO 8601 time or a "
                                   f"datetime, got {value!r:.40}", where=where)


AsOf = int | str | dt.datetime | None
_lakes: dict[tuple[str, str | None], Lake] = {}
_OPERATIONS = OperationIndex()  # shared by this process's threads: data files never change once written


def _lake(log_dir: Path) -> Lake:
    """The lake of a log directory, kept per process so its table is refreshed incrementally."""
    key = (str(log_dir), os.environ.get("SECUREML_AUDIT_LAKE_URI"))
    lake = _lakes.get(key)
    if lake is None:
        lake = _lakes[key] = Lake(log_dir)
    return lake


def embedded_tail(log_dir: Path, snapshot: Snapshot) -> pa.Table:
    """Events of the embedded log past the table's positions, decoded (what the materializer refuses left out).

    Read by the materializer's own source and accept step, so a reader shows exactly what the
    lake will hold once materialised.
    """
    source = EmbeddedSource(log_dir)
    source.start(snapshot.positions)
    tables = []
    while batches := source.poll(AUTO_MATERIALIZE_EVENTS, 0):
        if (table := accepted_events(batches, _leave_out)) is not None:
            tables.append(table)
    return pa.concat_tables(tables) if tables else _no_events()


@functools.cache
def _no_events() -> pa.Table:
    """An events table without rows: one serves every query (tables are immutable), as making one of the ~50
    columns costs ~0.2 ms, a few percent of a small query."""
    return lake_schema().empty_table()


def _leave_out(_item: Item, _reason: str) -> None:
    """A refused message is not shown (the materializer dead-letters it)."""


def _pending_embedded(log_dir: Path, snapshot: Snapshot) -> int:
    segments = list_segments(log_dir)
    held = snapshot.positions(f"log/{s.name}" for s in segments)
    return sum(max(0, s.stat().st_size - held.get(f"log/{s.name}", 0)) for s in segments)


def _connection() -> duckdb.DuckDBPyConnection:
    con = getattr(_local, "con", None)
    if con is None:
        con = duckdb.connect(config={"threads": 2})
        con.execute("SET TimeZone = 'UTC'")
        # Data files of a Delta table never change in place (a new version writes new files), so
        # their footers can be kept between queries: the cache checks each file's mtime anyway.
        con.execute("SET parquet_metadata_cache = true")
        _local.con = con
    return con


def _snapshot(log_dir: Path, as_of: AsOf) -> tuple[Lake, Snapshot, pa.Table]:
    """One table version, and (for the newest) the embedded log's events it does not hold yet."""
    lake = _lake(log_dir)
    if as_of is not None:
        return lake, lake.snapshot(as_of), _no_events()
    snapshot = lake.snapshot()
    # ~200 bytes per event on disk: materialise a large tail instead of decoding it every time.
    if _pending_embedded(log_dir, snapshot) > AUTO_MATERIALIZE_EVENTS * 200:
        from secureml.materializer import materialize_embedded

        if materialize_embedded(log_dir, blocking=False) is not None:
            snapshot = lake.snapshot()
    return lake, snapshot, embedded_tail(log_dir, snapshot)


def _union_sql(lake_sql: str | None, con: duckdb.DuckDBPyConnection, tail: pa.Table, *, hive: bool) -> str:
    """SQL for all events: one table version UNION ALL the embedded tail."""
    if lake_sql is not None and tail.num_rows == 0:
        # No union, even with nothing: it would keep filters from reaching the Parquet scan (and
        # registering the empty tail costs a few ms per query).
        return lake_sql
    con.register("_tail_events", tail)
    tail_sql = "SELECT * FROM _tail_events"
    if hive:
        tail_sql = f"SELECT *, CAST(\"timestamp\" AS DATE) AS {PARTITION_KEY} FROM _tail_events"
    return tail_sql if lake_sql is None else f"{lake_sql} UNION ALL BY NAME {tail_sql}"


def connect(log_dir: str | os.PathLike[str] | None = None, *, as_of: AsOf = None) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB connection with a view ``events`` over every event of the lake.

    The view is a snapshot: call connect() again to see events logged later (``as_of``, a
    Delta version or a time, shows the lake as it was then). Columns are the event fields
    (timestamps as TIMESTAMPTZ, free-form fields as JSON text), ``source``, ``source_offset``
    and ``event_date``; personal values read as logged (or ``<erased>``), and the view
    ``events_sealed`` holds them as stored. When ``log_dir/alerts/alerts.jsonl`` exists there is also a table
    ``alerts`` (one row per compliance alert).
    """
    _as_of_argument(as_of, "connect")
    directory = _log_dir(log_dir, "connect")
    lake, snapshot, tail = _snapshot(directory, as_of)
    con = duckdb.connect(config={"threads": 2})
    con.execute("SET TimeZone = 'UTC'")
    lake_sql = events_sql(con, lake, snapshot, with_date=True)
    union = _union_sql(lake_sql, con, tail, hive=True)
    # events: values as logged (or <erased>); events_sealed: as stored, what the hashes cover.
    con.execute(f"CREATE VIEW events_sealed AS {union}")
    text_columns = [f.name for f in lake_schema() if f.name in REVEALABLE_FIELDS
                    and (pa.types.is_string(f.type) or pa.types.is_large_string(f.type))]
    con.execute(f"CREATE VIEW events AS {revealed_view_sql(con, revealer_for(directory), union, text_columns)}")
    alerts = directory / ALERTS_FILE
    if alerts.is_file() and alerts.stat().st_size:
        # The alerter's record in embedded mode (or its jsonl sink pointed here in Kafka mode).
        path = str(alerts).replace("'", "''")
        con.execute(
            f"CREATE TABLE alerts AS SELECT * FROM read_json_auto('{path}', format = 'newline_delimited', "
            "ignore_errors = true)"
        )
    return con


@contextlib.contextmanager
def _selected(
    operation_id: str | None, operation_name: str | None, start_time: str | dt.datetime | None,
    end_time: str | dt.datetime | None, log_dir: str | os.PathLike[str] | None, *, event_type: str | list[str] | None,
    user: str | None, subject: str | None, limit: int | None, offset: int, as_of: AsOf, where: str,
    dict_columns: bool,
) -> Iterator[tuple[duckdb.DuckDBPyRelation, Path, bool]]:
    """The matching events as a DuckDB relation on this thread's connection, the log directory and whether the
    relation is a page (``limit``/``offset``: then in time order); the views it reads exist while in the block."""
    _position_argument(limit, "limit", where, optional=True)
    _position_argument(offset, "offset", where, optional=False)
    _as_of_argument(as_of, where)
    directory = _log_dir(log_dir, where)
    selection = select_events(
        operation_id=operation_id, operation_name=operation_name, start_time=start_time, end_time=end_time,
        event_type=event_type, user=user, where=where,
        user_forms=stored_forms(user, "user", directory, where),
        subject_forms=stored_forms(subject, "subject", directory, where),
    )
    page = (f" LIMIT {limit}" if limit is not None else "") + (f" OFFSET {offset}" if offset else "")
    lake, snapshot, tail = _snapshot(directory, as_of)
    con = _connection()
    files = None
    if operation_id is not None:
        files = functools.partial(_OPERATIONS.files_holding, con, operation_id=operation_id)
    lake_sql = events_sql(con, lake, snapshot, start_us=selection.start_micros, end_us=selection.end_micros,
                          files=files)
    union = _union_sql(lake_sql, con, tail, hive=False)
    try:
        columns = _dict_columns(con, union, selection) if dict_columns else "*"
        sql = f"SELECT {columns} FROM ({union}){selection.where}"
        if page:
            sql += f" ORDER BY {', '.join(column for column, _ in ORDER)}{page}"  # DuckDB's top-N: only a page is kept
        yield con.sql(sql, params=selection.params), directory, bool(page)
    finally:
        con.unregister("_tail_events")
        if not lake.local:
            con.unregister(f"lake_v{snapshot.version}")


def query_events(
    operation_id: str | None = None,
    operation_name: str | None = None,
    start_time: str | dt.datetime | None = None,
    end_time: str | dt.datetime | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    *,
    event_type: str | list[str] | None = None,
    user: str | None = None,
    subject: str | None = None,
    limit: int | None = None,
    offset: int = 0,
    as_of: AsOf = None,
    where: str = "get_audit_logs",
    reveal: bool = True,
    in_order: bool = True,
) -> pa.Table:
    """Matching events as an Arrow table in time order (then seq), with every lake column.

    Personal values read as logged (``reveal``; False gives them as stored and sealed).
    ``in_order=False`` leaves a whole result (not a page) in the order read, for a caller that
    orders what it makes of the rows instead (``time_order`` gives the order).
    """
    with _selected(operation_id, operation_name, start_time, end_time, log_dir, event_type=event_type, user=user,
                   subject=subject, limit=limit, offset=offset, as_of=as_of, where=where,
                   dict_columns=False) as (relation, directory, page):
        table = relation.to_arrow_table()
    if not page and in_order and (order := time_order(table)) is not None:
        table = _taken(table, order)
    return reveal_table(table, revealer_for(directory)) if reveal else table


def _dict_columns(con: duckdb.DuckDBPyConnection, union: str, selection: Selection) -> str:
    """The select list of the columns the log dicts of the selected events hold (their types' keys).

    A lake row has a column for every event type's payload, null in the others' rows: a result of a
    few types reads about 30 of the 48 columns, and DuckDB's Arrow result writes every column it
    reads, nulls included (1M rows of the bench lake: 0.36 s for the dicts' columns, 0.57 s for all).
    The event types come first from their own column, a fraction of the reading it saves.
    """
    types = con.sql(f"SELECT DISTINCT event_type FROM ({union}){selection.where}", params=selection.params).fetchall()
    present = set(lake_schema().names)
    wanted = {column for column, _ in ORDER} | {"event_id", "event_type"}
    for (event_type,) in types:
        wanted.update(_keys(event_type))
    return ", ".join(f'"{name}"' for name in lake_schema().names if name in wanted and name in present)


def time_order(table: pa.Table) -> np.ndarray | None:
    """Row indices that put ``table`` in time order (then seq, then operation), or None when it is in order.

    Sorting indices and taking the rows is about twice as fast as DuckDB's sort, which copies every one of the ~50
    columns into its row format (a 157k-row result: 0.5x the time). A result is mostly a few runs already in time
    order (files are sorted), no two of its events at the same microsecond: then the times alone order it, found in a
    pass, or by a stable sort of the times that merges the runs (1M rows: 8-14 ms, where Arrow's sort of the three
    keys took 30-75 ms). Equal times are ordered by all three keys in Arrow.
    """
    if table.num_rows < 2:
        return None
    stamps = table["timestamp"]
    if stamps.null_count == 0:
        times = stamps.combine_chunks().cast(pa.int64()).to_numpy()
        if (times[1:] > times[:-1]).all():
            return None
        order = np.argsort(times, kind="stable")
        ordered = times[order]
        if (ordered[1:] != ordered[:-1]).all():
            return order
    order = pc.sort_indices(table, ORDER).to_numpy()
    return None if np.array_equal(order, np.arange(len(order))) else order


def _taken(table: pa.Table, order: np.ndarray) -> pa.Table:
    """The rows of ``table`` in ``order``; a column of nulls (another event type's payload) is made anew,
    not taken: taking from ~30 null columns of DuckDB's chunked result costs as much as the rest."""
    count = len(order)
    columns = [pa.nulls(count, c.type) if c.null_count == len(c) else c.take(order) for c in table.columns]
    return pa.Table.from_arrays(columns, schema=table.schema)


def query_view(
    sql: str, params: list[object] | None = None, log_dir: str | os.PathLike[str] | None = None, *,
    as_of: AsOf = None, where: str = "query_view",
) -> tuple[pa.Table, int | None]:
    """One SELECT over the views ``events`` (and ``alerts``) that ``connect`` defines, as Arrow, and the table version.

    For readers that ask many small questions (the web explorer's pages): it runs on this
    thread's cached connection, which keeps Parquet footers between calls, instead of a new
    database per call. The views exist only for the duration of the query.
    """
    _as_of_argument(as_of, where)
    directory = _log_dir(log_dir, where)
    lake, snapshot, tail = _snapshot(directory, as_of)
    con = _connection()
    lake_sql = events_sql(con, lake, snapshot, with_date=True)
    created = ["events"]
    try:
        con.execute(f"CREATE OR REPLACE TEMP VIEW events AS {_union_sql(lake_sql, con, tail, hive=True)}")
        alerts = directory / ALERTS_FILE
        if alerts.is_file() and alerts.stat().st_size:
            path = str(alerts).replace("'", "''")
            con.execute(f"CREATE OR REPLACE TEMP VIEW alerts AS SELECT * FROM read_json_auto('{path}', "
                        "format = 'newline_delimited', ignore_errors = true)")
            created.append("alerts")
        return con.sql(sql, params=params or []).to_arrow_table(), snapshot.version
    finally:
        for view in created:
            con.execute(f"DROP VIEW IF EXISTS {view}")
        con.unregister("_tail_events")
        if not lake.local:
            con.unregister(f"lake_v{snapshot.version}")


# Arrow's text of a timestamp[us], ``2026-01-12 08:10:19.200000``, and the log dicts' ISO form of it.
_ARROW_TIME_WIDTH = 26
_ISO_SUFFIX = np.frombuffer(b"+00:00", np.uint8)


def _iso_utc(column: pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """UTC timestamps as ISO 8601 text with microseconds (``2026-01-12T08:10:19.200000+00:00``).

    Cast without the time zone (strftime converts every value through the zone database),
    then reshaped. Arrow's text of a timestamp[us] has one width for years 1000-9999, so
    the ``T`` and the offset are set in one numpy copy of the bytes; Arrow's string kernels
    for the same take about 3x as long as the cast itself.
    """
    text = pc.cast(pc.cast(column, pa.timestamp("us")), pa.large_string()).combine_chunks()
    count = len(text)
    _, offsets_buffer, data = text.buffers()
    offsets = np.frombuffer(offsets_buffer, np.int64, count + 1, text.offset * 8)
    if count == 0 or text.null_count or not (np.diff(offsets) == _ARROW_TIME_WIDTH).all():
        iso = pc.replace_substring(text, " ", "T", max_replacements=1)
        return pc.binary_join_element_wise(iso, pa.scalar("+00:00", text.type), pa.scalar("", text.type))
    width = _ARROW_TIME_WIDTH + len(_ISO_SUFFIX)
    out = np.empty((count, width), np.uint8)
    out[:, :_ARROW_TIME_WIDTH] = np.frombuffer(data, np.uint8, count * _ARROW_TIME_WIDTH, int(offsets[0])).reshape(
        count, _ARROW_TIME_WIDTH)
    out[:, 10] = ord("T")
    out[:, _ARROW_TIME_WIDTH:] = _ISO_SUFFIX
    positions = np.arange(0, (count + 1) * width, width, dtype=np.int64)
    return pa.LargeStringArray.from_buffers(count, pa.py_buffer(positions), pa.py_buffer(out))


def _json_column(column: pa.ChunkedArray) -> list[Any]:
    """JSON texts parsed, each distinct text once.

    A repeated scalar is shared; a repeated flat object or array is copied for every row
    (rows are the caller's to change); anything nested is parsed row by row. Rows are picked
    from the distinct values by index in C (``map``), not by a Python loop.
    """
    encoded = pc.dictionary_encode(column).combine_chunks()
    texts = encoded.dictionary.to_pylist()
    indexes = encoded.indices.to_pylist()
    if encoded.null_count:
        texts.append(None)
        none = len(texts) - 1
        indexes = [none if i is None else i for i in indexes]
    loads = json.loads
    bases: list[Any] = []
    copies: list[Any] = []  # per distinct text: None (share), dict or list (copy flat), loads (nested)
    for text in texts:
        result = None if text is None else loads(text)
        copy: Any = None
        if isinstance(result, dict):
            copy = dict if not any(isinstance(v, (dict, list)) for v in result.values()) else loads
        elif isinstance(result, list):
            copy = list if not any(isinstance(v, (dict, list)) for v in result) else loads
        bases.append(text if copy is loads else result)
        copies.append(copy)
    picked = map(bases.__getitem__, indexes)
    kinds = set(copies)
    if len(kinds) == 1:
        (copy,) = kinds
        return list(picked) if copy is None else list(map(copy, picked))
    return [base if copy is None else copy(base) for base, copy in zip(picked, map(copies.__getitem__, indexes))]


def _list_column(column: pa.ChunkedArray) -> list[Any]:
    """A list column as Python lists, one new list per row: sliced from one flat list of the values
    (several times faster than ``to_pylist``, which builds each row through a scalar)."""
    array = column.combine_chunks()
    if array.offset:
        array = pa.concat_arrays([array])  # offsets from 0
    offsets = array.offsets.to_numpy()
    steps = np.diff(offsets)
    if len(steps) and not array.null_count and (steps == steps[0]).all():
        # Every row as long (one regulation each, say): rows zipped from strided slices, about 1.4x faster.
        width = int(steps[0])
        values = pc.list_flatten(array).to_pylist()  # exactly the rows' values, wherever the offsets start
        return list(map(list, zip(*(values[i::width] for i in range(width))))) if width else [[] for _ in steps]
    flat = array.values.to_pylist()
    bounds = offsets.tolist()
    rows: list[Any] = list(map(flat.__getitem__, map(slice, bounds[:-1], bounds[1:])))
    if array.null_count:
        for place in pc.indices_nonzero(array.is_null()).to_pylist():
            rows[place] = None
    return rows


def _to_logs(table: pa.Table, order: np.ndarray | None = None, revealer: Revealer | None = None
             ) -> list[dict[str, Any]]:
    """Rows as the user guide's log dicts: envelope plus the payload fields of each event type.

    ``order`` (row indices) puts the dicts in another order than the rows': reordering the
    dicts costs a fraction of reordering the table's columns. With ``revealer``, personal values
    read as logged (``reveal_logs``).

    The accelerator builds the dicts in one pass over the columns when it is installed
    (``native/src/rows.rs``: the same dicts, key order included), and when only text columns
    hold pseudonyms or ciphertexts (a real lake's users and inference inputs), each row holding
    one is made as its revealed event in that pass, at the cost of a dict: of the query's own
    ``RevealedEvent`` class, its sealed forms kept for the query as a whole (``RevealedRows``). A
    ``RevealedEvent`` per row holding its own sealed forms cost 1.5x the dicts. The few rows whose
    JSON columns hold personal values (a subject request's e-mail) are then revealed in Python
    (``reveal_parsed_rows``). The cyclic garbage collector is paused meanwhile (``_acyclic``).
    """
    count = table.num_rows
    if count == 0:
        return []
    with _acyclic(lambda: count):
        logs = _native_logs([table], revealer, order)
        if logs is not None:
            return logs
        return _revealed_python_logs(table, order, revealer)


def _native_logs(parts: Iterable[pa.Table], revealer: Revealer | None, order: np.ndarray | None = None,
                 kept: list[pa.Table] | None = None) -> list[dict[str, Any]] | None:
    """The accelerator's dicts of the rows of ``parts`` (tables of one schema), in their order (in ``order`` for one
    table), or None when it leaves a part to the Python path, or is not installed. Every part is read to its end
    and added to ``kept``, a refused one and those after it included, so the caller has the whole table.

    One ``RevealedRows`` serves every part's revealed events; it holds the table once all are made.
    """
    kept = [] if kept is None else kept
    logs: list[dict[str, Any]] = []
    rows: RevealedRows | None = None
    revealed: set[str] = set()  # the text columns revealed in some part
    refused = _native_log_dicts is None
    parsed = None if refused else accelerator.native.JsonCache()  # JSON texts parsed once each across the parts
    parsed_rows: list[tuple[int, list[dict[str, Any]], pa.Table, tuple[str, ...]]] = []  # JSON columns to reveal
    for part in parts:
        kept.append(part)
        if refused or part.num_rows == 0:
            continue
        columns = tuple(personal_columns(part, revealer))
        texts = tuple(name for name in columns if name not in JSON_FIELDS)
        # The native pass's revealed events find their sealed forms by their event_id and type (``RevealedRows``).
        if texts and not {"event_id", "event_type"} <= set(part.column_names):
            refused = True
            continue
        reveal = None
        if revealer is not None and texts:
            if rows is None:
                release_unused()
                rows = RevealedRows(revealer, _keys)
            reveal = (texts, rows.event_class, revealer.key_bytes, revealer.text)
        made = _native_log_dicts(part.to_batches(), _template, TIMESTAMP_FIELDS, tuple(JSON_FIELDS), json.loads,
                                 None if order is None else pa.array(order, pa.int64()), reveal, parsed)
        if made is None:
            refused = True
            continue
        if revealer is not None and len(texts) < len(columns):
            parsed_rows.append((len(logs), made, part, columns))
        revealed.update(texts)
        if logs:
            logs += made
        else:
            logs = made
    if refused:
        if rows is not None:
            rows.release()  # the Python path reveals instead
        return None
    if rows is not None:
        table = _whole(kept)
        rows.hold(table, tuple(name for name in table.column_names if name in revealed))  # in the columns' order
        rows.registered()
    # Once the revealed events find their sealed forms (read by ``reveal_parsed_rows``).
    for start, made, part, columns in parsed_rows:
        reveal_parsed_rows(made, part, order, revealer, columns)  # type: ignore[arg-type]
        if made is not logs:
            logs[start:start + len(made)] = made
    return logs


def _whole(parts: list[pa.Table]) -> pa.Table:
    """The parts of a result as one table (their chunks, not copied)."""
    return parts[0] if len(parts) == 1 else pa.concat_tables(parts)


def _batch_rows() -> int:
    """Rows per batch of DuckDB's streamed result, and in its first part: a row group of the lake's files, or a part
    when smaller (``STREAM_ROWS``)."""
    return min(ROW_GROUP_ROWS, STREAM_ROWS)


def _parts(reader: pa.RecordBatchReader, rows: int, first: int) -> Iterator[pa.Table]:
    """The batches of ``reader`` as tables of at least ``rows`` rows each, the first of ``first`` (the last may hold
    fewer)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in reader:
        pending.append(batch)
        count += batch.num_rows
        if count >= first:
            yield pa.Table.from_batches(pending)
            pending, count, first = [], 0, rows
    if pending:
        yield pa.Table.from_batches(pending)


def _streamed_logs(reader: pa.RecordBatchReader, revealer: Revealer | None) -> list[dict[str, Any]]:
    """``_to_logs`` of a result read batch by batch: DuckDB reads the next batches on its own threads while the dicts
    of the last are made, then the dicts are put in time order (``time_order`` of the whole result)."""
    kept: list[pa.Table] = []
    with _acyclic(lambda: sum(part.num_rows for part in kept)):
        logs = _native_logs(_parts(reader, STREAM_ROWS, _batch_rows()), revealer, kept=kept)
        if not kept:
            return []
        table = _whole(kept)
        order = time_order(table)
        if logs is None:
            return _revealed_python_logs(table, order, revealer)
        return logs if order is None else _picked(logs, order)


def _picked(items: list[Any], order: np.ndarray) -> list[Any]:
    """``[items[i] for i in order]``: by the accelerator when installed (``native/src/rows.rs``, ``pick``), which reads
    the items ahead of taking them (a result's dicts, taken in time order from storage order: a cache miss each)."""
    if _native_pick is not None:
        return _native_pick(items, pa.array(order, pa.int64()))
    return list(map(items.__getitem__, order.tolist()))


def _revealed_python_logs(table: pa.Table, order: np.ndarray | None, revealer: Revealer | None
                          ) -> list[dict[str, Any]]:
    """The Python path of ``_to_logs``: for a column or value the accelerator leaves to it, or no accelerator."""
    return reveal_logs(_python_logs(table, order), revealer, tuple(personal_columns(table, revealer)))


def _python_logs(table: pa.Table, order: np.ndarray | None) -> list[dict[str, Any]]:
    """``_to_logs`` without the accelerator: rows converted per event type, only the columns that type carries (a
    payload column of another type is all nulls, and converting it costs as much as the rest); with several types
    the dicts are then put back in their rows' order."""
    types = table["event_type"]
    bounds = pc.min_max(types)  # one pass, cheaper than hashing for the usual single type
    if bounds["min"] == bounds["max"]:
        rows = _logs_of_type(table, bounds["min"].as_py())
        return rows if order is None else list(map(rows.__getitem__, order.tolist()))
    logs: list[dict[str, Any]] = []
    places = []
    for event_type in pc.unique(types).to_pylist():
        match = pc.equal(types, pa.scalar(event_type, types.type))
        places.append(pc.indices_nonzero(match).to_numpy())
        columns = table.select(list(_keys(event_type)))  # filter only the columns the type's dicts hold
        logs += _logs_of_type(columns.filter(match), event_type)
    # Each dict back in its row's place, picked in C rather than placed by a Python loop.
    positions = np.argsort(np.concatenate(places), kind="stable")
    return list(map(logs.__getitem__, (positions if order is None else positions[order]).tolist()))


@contextlib.contextmanager
def _acyclic(count: Callable[[], int]) -> Iterator[None]:
    """The cyclic garbage collector paused while ``count()`` rows of new objects holding no cycle are made (dicts,
    lists, revealed events): collections triggered by creating millions of them cost as much as creating them."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            if count() >= _SETTLE_MIN_ROWS and gc.get_freeze_count() == 0:
                # The new dicts and lists would otherwise be traversed by the next young collection (the count
                # of allocations kept growing while paused), then by the middle one: a third of the time it took
                # to make them, for objects known to hold no cycle. Freezing and unfreezing moves every tracked
                # object of the process (others' young ones too, collected at the next full collection instead)
                # to the oldest generation without traversing any, and resets that count; skipped when the
                # process froze objects itself (unfreezing would hand them back to the collector).
                gc.freeze()
                gc.unfreeze()
            gc.enable()


def _logs_of_type(table: pa.Table, event_type: str | None) -> list[dict[str, Any]]:
    """Rows that all have ``event_type``, as log dicts.

    A column holding one immutable value in every row (the event type, a producer, an unused
    field's None) is converted once into a template dict; each row is a copy of the template
    (one C call) with only the other columns set, so its cost follows the columns that vary.
    """
    keys = _keys(event_type)
    if table.num_rows < _TEMPLATE_MIN_ROWS:
        return _few_logs(table, keys)
    template = _template(event_type).copy()
    varying: list[str] = []
    values: list[list[Any]] = []
    for name in keys:
        column = table[name]
        if column.null_count == len(column):
            continue
        # Equality to the first value: several times cheaper than min_max, which orders strings.
        if (column.null_count == 0 and not pa.types.is_list(column.type) and not pa.types.is_large_list(column.type)
                and pc.all(pc.equal(column, column[0])).as_py()):
            (value,) = _python_values(name, column.slice(0, 1))
            if not isinstance(value, (dict, list)):  # rows are the caller's to change: no shared containers
                template[name] = value
                continue
        varying.append(name)
        values.append(_python_values(name, column))
    return list(map(_filler(tuple(varying)), itertools.repeat(template, table.num_rows), *values))


def _few_logs(table: pa.Table, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """A few rows as log dicts, by Arrow's own row conversion with times and JSON texts then set in Python.

    For the handful of rows of an operation's start and end beside its many other events, this
    costs less than the two or three Arrow calls per column of the column-wise conversion.
    """
    logs = table.select(list(keys)).to_pylist()
    times = [key for key in keys if key in TIMESTAMP_FIELDS]
    texts = [key for key in keys if key in JSON_FIELDS]
    for log in logs:
        for key in times:
            if (value := log[key]) is not None:
                log[key] = _iso_text(value)
        for key in texts:
            if (value := log[key]) is not None:
                log[key] = json.loads(value)
    return logs


def _iso_text(value: dt.datetime) -> str:
    """A time as ``_iso_utc`` writes it (a naive time is UTC, as the lake stores times)."""
    return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).astimezone(dt.UTC).isoformat(
        timespec="microseconds")


@functools.lru_cache(maxsize=64)
def _keys(event_type: str | None) -> tuple[str, ...]:
    """The keys of an event type's dicts, in order: the envelope, then the type's payload fields."""
    return (*ENVELOPE, *(n for n in (_PAYLOAD.get(event_type) or fields_of(event_type)) if n not in ENVELOPE))


@functools.lru_cache(maxsize=64)
def _template(event_type: str | None) -> dict[str, Any]:
    """What an event type's dicts are copied from: its keys in order, each None.

    Made as an object's attribute dict, so CPython keeps the keys in one table shared by every
    copy (a "split" dict) and each row's dict holds only its values: 170 bytes less per row,
    and the copy is ~20% faster. Nothing else shows: it is a dict, and a row changes as a
    plain dict of its items would, without touching the others (tests/test_native_rows.py).
    """
    holder = type("LogKeys", (), {})()
    for key in _keys(event_type):
        setattr(holder, key, None)
    return holder.__dict__


def _python_values(name: str, column: pa.ChunkedArray) -> list[Any]:
    """A column's values as the log dicts hold them (times as ISO text, JSON parsed, lists as lists)."""
    if name in TIMESTAMP_FIELDS:
        return _shared_values(column, _iso_utc)
    if name in JSON_FIELDS:
        return _json_column(column)
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        return _list_column(column)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return _shared_values(column)
    return column.to_pylist()


def _shared_values(
    column: pa.ChunkedArray, convert: Callable[[pa.ChunkedArray], pa.Array | pa.ChunkedArray] | None = None,
) -> list[Any]:
    """A text or time column's values (``convert``-ed in Arrow), each distinct value made once and shared
    by its rows when at most half the rows are distinct (ids, names, an operation's start).

    Strings are immutable, so sharing is safe; it saves allocating an object per row, and
    ``convert`` then runs on the distinct values only. Whether to try is decided on the first
    rows: encoding a column of distinct values (event ids, times) only adds to its cost.
    """
    encoded = None
    if len(column) >= _SHARE_MIN_ROWS and 2 * pc.count_distinct(column.slice(0, _PROBE_ROWS)).as_py() <= _PROBE_ROWS:
        encoded = pc.dictionary_encode(column).combine_chunks()
    if encoded is None or 2 * len(encoded.dictionary) > len(encoded):
        return (column if convert is None else convert(column)).to_pylist()
    values = (encoded.dictionary if convert is None else convert(pa.chunked_array([encoded.dictionary]))).to_pylist()
    indices = encoded.indices
    if indices.null_count:
        values.append(None)
        indices = indices.fill_null(len(values) - 1)
    return list(map(values.__getitem__, indices.to_numpy().tolist()))


@functools.lru_cache(maxsize=64)
def _filler(keys: tuple[str, ...]) -> Callable[..., dict[str, Any]]:
    """A function of a template dict and one value per key returning a copy of the template with them set.

    ``dict.copy`` of a template clones its hash table at once, and the keys stay in the
    template's order; each assignment then names a constant key. The keys are the event
    schema's field names; they enter the code as string literals (repr).
    """
    params = "".join(f", v{i}" for i in range(len(keys)))
    body = "".join(f"    row[{key!r}] = v{i}\n" for i, key in enumerate(keys))
    namespace: dict[str, Any] = {}
    exec(f"def fill(template{params}):\n    row = template.copy()\n{body}    return row\n", namespace)  # noqa: S102 -- literals and parameter names only
    return namespace["fill"]


def get_audit_logs(
    operation_id: str | None = None,
    operation_name: str | None = None,
    start_time: str | dt.datetime | None = None,
    end_time: str | dt.datetime | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    *,
    event_type: str | list[str] | None = None,
    user: str | None = None,
    subject: str | None = None,
    limit: int | None = None,
    offset: int = 0,
    output: Output = "dicts",
    as_of: AsOf = None,
) -> Any:
    """Audit events matching every given filter, in time order (then seq).

    ``operation_name`` matches exactly; naive times are UTC. The default output is a list of
    dicts: the envelope (``event_type``, ``timestamp`` as UTC ISO 8601 text, ``operation_id``,
    ``seq``, ``user``, ``regulations``, ``context`` as a dict, ...) and the logging call's
    arguments under their own names. ``output='arrow' | 'pandas' | 'polars'`` returns a table
    with every column instead; ``limit``/``offset`` page through large results; ``as_of`` (a
    Delta version number, or a time) returns what the lake held then.

    ``user`` and ``subject`` take the id as logged (matched through its pseudonym as well);
    ``subject`` finds the events of a data subject (its user, request ``user_id`` or values
    encrypted for it). Personal values read as logged while the subject's key exists, and as
    ``<erased>`` once the subject was erased.
    """
    if output not in OUTPUTS:
        raise AuditValidationError("output", f"must be one of {', '.join(map(repr, OUTPUTS))}, got {output!r:.40}",
                                   where="get_audit_logs")
    if output == "dicts":
        # Only the columns the dicts hold; a whole result is read in batches, the dicts of each made as DuckDB reads
        # the next (``_streamed_logs``), a page at once.
        with _selected(operation_id, operation_name, start_time, end_time, log_dir, event_type=event_type, user=user,
                       subject=subject, limit=limit, offset=offset, as_of=as_of, where="get_audit_logs",
                       dict_columns=True) as (relation, directory, page):
            revealer = revealer_for(directory)
            if page:
                return _to_logs(relation.to_arrow_table(), None, revealer)
            return _streamed_logs(relation.to_arrow_reader(_batch_rows()), revealer)
    table = query_events(
        operation_id, operation_name, start_time, end_time, log_dir,
        event_type=event_type, user=user, subject=subject, limit=limit, offset=offset, as_of=as_of,
    )
    if output == "arrow":
        return table
    if output == "pandas":
        if importlib.util.find_spec("pandas") is None:
            raise AuditValidationError("output", "'pandas' needs pandas: pip install 'secureml-audit[pandas]' "
                                       "(or use output='arrow' or 'polars')", where="get_audit_logs")
        return table.to_pandas()
    if output == "polars":
        import polars as pl

        return pl.from_arrow(table)
    raise AssertionError(output)  # checked above


def count_events(log_dir: str | os.PathLike[str] | None = None) -> int:
    """Number of events stored: rows of the newest table version plus the unmaterialised embedded tail."""
    return lake_state(log_dir, "count_events")[1]


def lake_state(log_dir: str | os.PathLike[str] | None = None, where: str = "lake_state") -> tuple[int | None, int]:
    """(newest table version, events stored): it changes whenever what a reader sees can, for readers' caches."""
    directory = _log_dir(log_dir, where)
    snapshot = _lake(directory).snapshot()
    return snapshot.version, snapshot.rows + embedded_tail(directory, snapshot).num_rows
