"""The explorer's index of the lake: what its pages need, summarised per data file.

A Delta data file never changes (a new version writes new files), so each file is summarised
once per process, keyed by its path in the table; a new table version only costs the summaries
of its new files (a materializer's commit, a day's compaction) plus the unmaterialised embedded
tail. Pages then read the index instead of the lake: the operations list and its filters run in
memory, a timeline reads only the files whose time span holds its operation's events, and the
requests and charts pages never scan the lake.

The index keeps values as stored (pseudonyms, ciphertexts): pages reveal the rows they show,
and a user filter matches the stored forms of the name typed.

Builds run on a thread of their own. A server gives each page a budget (``wait``): a build
that takes longer leaves the page with the last complete index, marked as behind the lake, or,
before the first build of a large lake is done, with IndexPending (a page saying so, which
reloads itself), so no page waits seconds for the lake.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from secureml.lake.catalog import quoted_list
from secureml.lake.rows import PARTITION_KEY, lake_schema
from secureml.lake.table import Lake, LakeFile, Snapshot
from secureml.query.logs import embedded_tail


@dataclass(frozen=True)
class Summary:
    """One query of the index: ``sql`` over the view ``rows`` (the lake ``columns``, the data file's
    URI ``file`` and the event's UTC ``day``), grouped by (or keeping) ``file``; ``merge`` combines
    such parts (without ``file``) over the view ``parts`` into one of the same columns (None: they
    are put together as they are), so a merged summary takes more parts later. With a ``key``,
    only the merged rows whose key a new part names are merged again."""

    columns: tuple[str, ...]
    sql: str
    merge: str | None = None
    key: str | None = None


# Each file's operations. The listed fields come from the operation's start (seq 0: the earliest,
# should a replayed trail have stored two) and its audit_closed event; first_ts/last_ts/last_seq
# span every event of the operation in the file. An operation's events may lie in several files
# (its day's file and a later commit, or the tail).
OPERATIONS = Summary(
    ("operation_id", "operation_name", "seq", "event_type", "timestamp", "user", "user_id", "regulations", "status",
     "event_count"),
    """SELECT file, operation_id,
      arg_min(operation_name, "timestamp") FILTER (WHERE seq = 0) AS operation_name,
      min("timestamp") FILTER (WHERE seq = 0) AS started,
      arg_min("user", "timestamp") FILTER (WHERE seq = 0) AS "user",
      arg_min(regulations, "timestamp") FILTER (WHERE seq = 0) AS regulations,
      max(status) FILTER (WHERE event_type = 'audit_closed') AS status,
      max(event_count) FILTER (WHERE event_type = 'audit_closed') AS event_count,
      max("timestamp") FILTER (WHERE event_type = 'audit_closed') AS closed,
      min("timestamp") AS first_ts, max("timestamp") AS last_ts, max(seq) AS last_seq,
      list(DISTINCT "user") FILTER (WHERE "user" IS NOT NULL) AS users,
      list(DISTINCT user_id) FILTER (WHERE user_id IS NOT NULL) AS subjects
    FROM rows WHERE operation_id IS NOT NULL GROUP BY file, operation_id""",
    """SELECT operation_id, arg_min(operation_name, started) AS operation_name, min(started) AS started,
      arg_min("user", started) AS "user", arg_min(regulations, started) AS regulations, max(status) AS status,
      max(event_count) AS event_count, max(closed) AS closed, min(first_ts) AS first_ts, max(last_ts) AS last_ts,
      max(last_seq) AS last_seq, list_distinct(flatten(list(users))) AS users,
      list_distinct(flatten(list(subjects))) AS subjects
    FROM parts GROUP BY operation_id""",
    key="operation_id")
# Data-subject requests are few: each file keeps its request events whole, for the reports' deadline rules.
REQUESTS = Summary(tuple(lake_schema().names), "SELECT * FROM rows WHERE event_type = 'user_request'")
EVENTS_PER_DAY = Summary(
    ("event_type",), "SELECT file, day, event_type, count(*) AS n FROM rows GROUP BY ALL",
    "SELECT day, event_type, sum(n)::BIGINT AS n FROM parts GROUP BY ALL")
CHECKS = Summary(
    ("event_type", "regulation", "result"),
    "SELECT file, coalesce(regulation, '(none)') AS regulation, count(*) FILTER (result) AS passed, "
    "count(*) FILTER (NOT result) AS failed FROM rows WHERE event_type = 'compliance_check' GROUP BY ALL",
    "SELECT regulation, sum(passed)::BIGINT AS passed, sum(failed)::BIGINT AS failed FROM parts GROUP BY ALL")
SUMMARIES = {"operations": OPERATIONS, "requests": REQUESTS, "per_day": EVENTS_PER_DAY, "checks": CHECKS}


@dataclass(frozen=True)
class Index:
    """What the pages show of one lake state.

    ``listed``: the operations with a start event, newest start first (the operations page);
    ``summaries``: every operation's name, status, time span and last seq; ``people``:
    (operation_id, who) for each user or data subject one of its events names; ``requests``:
    every user_request event; ``per_day``: (day, event_type, n); ``checks``: (regulation, passed, failed).
    """

    listed: pa.Table
    summaries: pa.Table
    people: pa.Table
    requests: pa.Table
    per_day: pa.Table
    checks: pa.Table

    @classmethod
    def of(cls, merged: dict[str, pa.Table]) -> Index:
        """The index of merged summaries (one of each of SUMMARIES)."""
        operations = merged["operations"]
        operations = operations.set_column(operations.schema.get_field_index("status"), "status",
                                           pc.coalesce(operations["status"], "running"))  # no audit_closed yet
        ids = operations["operation_id"]
        named = [(pc.take(ids, pc.list_parent_indices(column)), pc.list_flatten(column))
                 for column in (operations["users"].combine_chunks(), operations["subjects"].combine_chunks())]
        return cls(
            listed=operations.filter(pc.is_valid(operations["started"]))
            .select(["operation_id", "operation_name", "started", "user", "regulations", "status", "event_count",
                     "closed"])
            .sort_by([("started", "descending"), ("operation_id", "ascending")]),
            summaries=operations.select(["operation_id", "operation_name", "status", "first_ts", "last_ts",
                                         "last_seq"]),
            people=pa.table({"operation_id": pa.chunked_array([i for i, _ in named], ids.type),
                             "who": pa.chunked_array([w for _, w in named], operations["users"].type.value_type)}),
            requests=merged["requests"].drop_columns(["day"]),
            per_day=merged["per_day"].set_column(0, "day", pc.cast(merged["per_day"]["day"], pa.string()))
            .sort_by([("day", "ascending"), ("event_type", "ascending")]),
            checks=merged["checks"].sort_by("regulation"),
        )

    def summary(self, operation_id: str) -> dict[str, Any] | None:
        """One operation's row of ``summaries`` (None when no event names it)."""
        at = pc.index(self.summaries.column("operation_id"), operation_id).as_py()
        return None if at < 0 else self.summaries.slice(at, 1).to_pylist()[0]

    def involving(self, forms: list[str]) -> pa.Array:
        """Ids of the operations whose events name any of these stored forms as user or data subject."""
        hit = pc.is_in(self.people.column("who"), pa.array(forms, pa.string()))
        return pc.unique(pc.filter(self.people.column("operation_id"), hit))


State = tuple[int | None, int]  # (Delta table version, events stored including the embedded tail)


class IndexPending(Exception):
    """No index of the lake is complete yet: its first build is under way."""

    def __init__(self, files: int, events: int, seconds: float) -> None:
        super().__init__(f"indexing {events:,} events in {files:,} data files ({seconds:.0f} s so far)")
        self.files, self.events, self.seconds = files, events, seconds


@dataclass(frozen=True)
class Indexed:
    """An index and the lake state it covers; ``behind``: the lake has changed since, a build is under way."""

    state: State
    index: Index
    behind: bool = False


@dataclass(frozen=True)
class _Build:
    state: State
    files: int
    started: float  # time.monotonic()
    done: Future[None]


class LakeIndex:
    """The index of one log directory, brought up to date from what changed.

    ``wait``: the seconds a call waits for a build of the lake's newest state before it takes the
    last complete index (``behind``) or raises IndexPending; None waits for it.
    """

    def __init__(self, log_dir: Path, wait: float | None = None) -> None:
        self.log_dir = log_dir
        self.wait = wait
        self._lake = Lake(log_dir)
        self._parts: dict[str, dict[str, pa.Table]] = {}  # data file path in the table -> summary name -> part
        self._files: dict[str, pa.Table] | None = None  # the summaries of every file of the table, merged
        self._current: tuple[State, Index] | None = None
        self._building: _Build | None = None
        self._lock = threading.Lock()  # guards _current and _building
        # One build at a time, on its own thread: a page that stops waiting does not stop the build.
        self._builder = ThreadPoolExecutor(1, thread_name_prefix="ui-index")
        self._con: duckdb.DuckDBPyConnection | None = None  # the builder thread's

    def state(self) -> Indexed:
        """The index of the lake's newest state, or, once ``wait`` has passed, the last complete one."""
        snapshot = self._lake.snapshot()
        tail = embedded_tail(self.log_dir, snapshot)
        state = (snapshot.version, snapshot.rows + tail.num_rows)
        deadline = None if self.wait is None else time.monotonic() + self.wait
        while True:
            with self._lock:
                current = self._current
                if current is not None and current[0] == state:
                    return Indexed(*current)
                if self._building is None:
                    self._building = _Build(state, len(snapshot.files), time.monotonic(),
                                            self._builder.submit(self._build_state, state, snapshot, tail))
                building = self._building
            try:
                building.done.result(None if deadline is None else max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                if current is None:
                    raise IndexPending(building.files, building.state[1],
                                       time.monotonic() - building.started) from None
                return Indexed(*current, behind=True)
            # Done: either this state's build (returned above on the next turn) or an older one's.

    def current(self) -> Index:
        """The index of the lake's newest state (or the last complete one, see ``state``)."""
        return self.state().index

    def _build_state(self, state: State, snapshot: Snapshot, tail: pa.Table) -> None:
        try:
            index = self._build(snapshot, tail)
            with self._lock:
                self._current = (state, index)
        finally:
            with self._lock:
                self._building = None

    def _build(self, snapshot: Snapshot, tail: pa.Table) -> Index:
        """The index from the cached parts, new files' parts and the tail's: an added file costs its own scan
        and the merge of the operations it names; only files removed (compaction) merge every part again."""
        if self._con is None:
            self._con = duckdb.connect(config={"threads": 2})
            self._con.execute("SET TimeZone = 'UTC'")
        con = self._con
        new = [f for f in snapshot.files if f.path not in self._parts]
        removed = self._parts.keys() - {f.path for f in snapshot.files}
        fresh: dict[str, dict[str, pa.Table]] = {f.path: {} for f in new}
        tail_parts: dict[str, pa.Table] = {}
        if new or removed or tail.num_rows or self._files is None:
            for name, summary in SUMMARIES.items():
                read = _scan(con, self._lake, summary, new, tail)
                files = read.column("file")
                for f in new:  # a file without such rows (or gone: the reading path serves the others) adds none
                    fresh[f.path][name] = read.filter(pc.equal(files, f.uri)).drop_columns(["file"])
                tail_parts[name] = read.filter(pc.equal(files, "")).drop_columns(["file"])
        # Files no longer in the table (compacted, vacuumed) drop out of the cache here.
        parts = {f.path: fresh[f.path] if f.path in fresh else self._parts[f.path] for f in snapshot.files}
        merged = self._files
        if removed or merged is None:
            merged = {name: _merged(con, summary, None, [*(p[name] for p in parts.values()),
                                                         tail_parts[name].slice(0, 0)])
                      for name, summary in SUMMARIES.items()}
        elif new:
            merged = {name: _merged(con, summary, merged[name], [fresh[f.path][name] for f in new])
                      for name, summary in SUMMARIES.items()}
        # Kept together only once all of it is read: a failed build leaves the cache as it was.
        self._parts, self._files = parts, merged
        if not tail.num_rows:
            return Index.of(merged)
        return Index.of({name: _merged(con, summary, merged[name], [tail_parts[name]])
                         for name, summary in SUMMARIES.items()})


def _merged(con: duckdb.DuckDBPyConnection, summary: Summary, merged: pa.Table | None,
            parts: list[pa.Table]) -> pa.Table:
    """``merged`` (a merged summary, or None) with ``parts`` merged in."""
    kept = None
    if summary.key is not None and merged is not None:
        # Rows of operations no new part names are kept as they are: a commit touches a few operations.
        named = pc.is_in(merged[summary.key], pc.unique(pa.concat_tables(parts)[summary.key]))
        kept, merged = merged.filter(pc.invert(named)), merged.filter(named)
    tables = pa.concat_tables([t for t in (merged, *parts) if t is not None], promote_options="permissive")
    if summary.merge is None:
        return tables
    con.register("parts", tables)
    try:
        result = con.sql(summary.merge).to_arrow_table()
    finally:
        con.unregister("parts")
    return result if kept is None else pa.concat_tables([kept, result], promote_options="permissive")


def _scan(con: duckdb.DuckDBPyConnection, lake: Lake, summary: Summary, files: list[LakeFile],
          tail: pa.Table) -> pa.Table:
    """One summary of these data files (``file``: the file's URI) and of the embedded tail (``file`` ''), in one scan.

    A local table's files are read by DuckDB, in parallel and only the summary's columns; an
    object-store table's through delta-rs's own file system, as the reading path does.
    """
    columns = ", ".join(f'"{c}"' for c in summary.columns)
    con.register("_tail", tail)
    sources = [f"SELECT {columns}, '' AS file, CAST(\"timestamp\" AS DATE) AS day FROM _tail"]
    registered: list[str] = []
    if lake.local:
        present = [f.uri for f in files if os.path.exists(f.uri)]
        if present:
            sources.append(f"SELECT {columns}, filename AS file, {PARTITION_KEY} AS day "
                           f"FROM read_parquet({quoted_list(present)}, filename = true, union_by_name = true, "
                           f"hive_partitioning = true, hive_types = {{'{PARTITION_KEY}': DATE}})")
    else:
        for number, file in enumerate(files):
            with suppress(FileNotFoundError):
                batches = list(lake.batches(file, list(summary.columns)))
                if batches:
                    registered.append(f"_file{number}")
                    con.register(registered[-1], pa.Table.from_batches(batches))
                    sources.append(f"SELECT {columns}, {quoted_list([file.uri])[1:-1]} AS file, "
                                   f"DATE {quoted_list([file.date])[1:-1]} AS day FROM {registered[-1]}")
    try:
        # A CTE, not a view: the files are bound once, by the query that reads them.
        return con.sql(f"WITH rows AS ({' UNION ALL BY NAME '.join(sources)}) {summary.sql}").to_arrow_table()
    finally:
        for name in ("_tail", *registered):  # the build's connection lives on: it keeps no rows
            con.unregister(name)
