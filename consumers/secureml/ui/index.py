"""The explorer's index of the lake: what its pages need, summarised per data file.

A Delta data file never changes (a new version writes new files), so each file is summarised
once per process, keyed by its path in the table; a new table version only costs the summaries
of its new files (a materializer's commit, a day's compaction) plus the unmaterialised embedded
tail. Pages then read the index instead of the lake: the operations list and its filters run in
memory, a timeline reads only the files whose time span holds its operation's events, and the
requests and charts pages never scan the lake.

The index keeps values as stored (pseudonyms, ciphertexts): pages reveal the rows they show,
and a user filter matches the stored forms of the name typed.
"""

from __future__ import annotations

import os
import threading
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
    URI ``file`` and the event's UTC ``day``), grouped by (or keeping) ``file``."""

    columns: tuple[str, ...]
    sql: str


# Each file's operations. The listed fields come from the operation's start (seq 0) and its
# audit_closed event; first_ts/last_ts/last_seq span every event of the operation in the file.
OPERATIONS = Summary(
    ("operation_id", "operation_name", "seq", "event_type", "timestamp", "user", "user_id", "regulations", "status",
     "event_count"),
    """SELECT file, operation_id,
      first(operation_name) FILTER (WHERE seq = 0) AS operation_name,
      min("timestamp") FILTER (WHERE seq = 0) AS started,
      first("user") FILTER (WHERE seq = 0) AS "user",
      first(regulations) FILTER (WHERE seq = 0) AS regulations,
      max(status) FILTER (WHERE event_type = 'audit_closed') AS status,
      max(event_count) FILTER (WHERE event_type = 'audit_closed') AS event_count,
      max("timestamp") FILTER (WHERE event_type = 'audit_closed') AS closed,
      min("timestamp") AS first_ts, max("timestamp") AS last_ts, max(seq) AS last_seq,
      list(DISTINCT "user") FILTER (WHERE "user" IS NOT NULL) AS users,
      list(DISTINCT user_id) FILTER (WHERE user_id IS NOT NULL) AS subjects
    FROM rows WHERE operation_id IS NOT NULL GROUP BY file, operation_id""")
# An operation's events may lie in several files (its day's compacted file and a later commit, or the tail).
_MERGE_OPERATIONS = """
SELECT operation_id, any_value(operation_name) AS operation_name, min(started) AS started,
  any_value("user") AS "user", any_value(regulations) AS regulations,
  coalesce(max(status), 'running') AS status, max(event_count) AS event_count, max(closed) AS closed,
  min(first_ts) AS first_ts, max(last_ts) AS last_ts, max(last_seq) AS last_seq,
  list_distinct(flatten(list(list_concat(coalesce(users, []), coalesce(subjects, []))))) AS people
FROM operations GROUP BY operation_id
"""
# Data-subject requests are few: each file keeps its request events whole, for the reports' deadline rules.
REQUESTS = Summary(tuple(lake_schema().names), "SELECT * FROM rows WHERE event_type = 'user_request'")
EVENTS_PER_DAY = Summary(("event_type",), "SELECT file, day, event_type, count(*) AS n FROM rows GROUP BY ALL")
CHECKS = Summary(
    ("event_type", "regulation", "result"),
    "SELECT file, coalesce(regulation, '(none)') AS regulation, count(*) FILTER (result) AS passed, "
    "count(*) FILTER (NOT result) AS failed FROM rows WHERE event_type = 'compliance_check' GROUP BY ALL")
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

    def summary(self, operation_id: str) -> dict[str, Any] | None:
        """One operation's row of ``summaries`` (None when no event names it)."""
        at = pc.index(self.summaries.column("operation_id"), operation_id).as_py()
        return None if at < 0 else self.summaries.slice(at, 1).to_pylist()[0]

    def involving(self, forms: list[str]) -> pa.Array:
        """Ids of the operations whose events name any of these stored forms as user or data subject."""
        hit = pc.is_in(self.people.column("who"), pa.array(forms, pa.string()))
        return pc.unique(pc.filter(self.people.column("operation_id"), hit))


class LakeIndex:
    """The index of one log directory, brought up to date on each call from what changed."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._lake = Lake(log_dir)
        self._parts: dict[str, dict[str, pa.Table]] = {}  # data file path in the table -> summary name -> part
        self._current: tuple[tuple[int | None, int], Index] | None = None  # (lake state, index)
        self._lock = threading.Lock()  # one build at a time: a second page waits for it instead of repeating it

    def state(self) -> tuple[tuple[int | None, int], Index]:
        """The lake's newest state (table version, events stored) and its index."""
        snapshot = self._lake.snapshot()
        tail = embedded_tail(self.log_dir, snapshot)
        state = (snapshot.version, snapshot.rows + tail.num_rows)
        with self._lock:
            if self._current is None or self._current[0] != state:
                self._current = (state, self._build(snapshot, tail))
            return self._current

    def current(self) -> Index:
        """The index of the lake's newest state."""
        return self.state()[1]

    def _build(self, snapshot: Snapshot, tail: pa.Table) -> Index:
        con = duckdb.connect(config={"threads": 2})
        try:
            con.execute("SET TimeZone = 'UTC'")
            new = [f for f in snapshot.files if f.path not in self._parts]
            merged: dict[str, pa.Table] = {}
            for name, summary in SUMMARIES.items():
                read = _scan(con, self._lake, summary, new, tail)
                files = read.column("file")
                for f in new:  # a file without such rows (or gone: the reading path serves the others too) adds none
                    self._parts.setdefault(f.path, {})[name] = read.filter(pc.equal(files, f.uri))
                parts = [self._parts[f.path][name] for f in snapshot.files]
                merged[name] = pa.concat_tables([*parts, read.filter(pc.equal(files, ""))]).drop_columns(["file"])
            # Files no longer in the table (compacted, vacuumed) drop out of the cache here.
            self._parts = {f.path: self._parts[f.path] for f in snapshot.files}
            con.register("operations", merged["operations"])
            con.execute(f"CREATE TEMP TABLE merged AS {_MERGE_OPERATIONS}")
            con.register("per_day", merged["per_day"])
            con.register("checks", merged["checks"])
            return Index(
                listed=con.sql("SELECT * EXCLUDE (people, first_ts, last_ts, last_seq) FROM merged "
                               "WHERE started IS NOT NULL ORDER BY started DESC, operation_id").to_arrow_table(),
                summaries=con.sql("SELECT operation_id, operation_name, status, first_ts, last_ts, last_seq "
                                  "FROM merged").to_arrow_table(),
                people=con.sql("SELECT DISTINCT operation_id, unnest(people) AS who FROM merged").to_arrow_table(),
                requests=merged["requests"].drop_columns(["day"]),
                per_day=con.sql("SELECT CAST(day AS VARCHAR) AS day, event_type, sum(n)::BIGINT AS n FROM per_day "
                                "GROUP BY ALL ORDER BY 1, 2").to_arrow_table(),
                checks=con.sql("SELECT regulation, sum(passed)::BIGINT AS passed, sum(failed)::BIGINT AS failed "
                               "FROM checks GROUP BY 1 ORDER BY 1").to_arrow_table(),
            )
        finally:
            con.close()


def _scan(con: duckdb.DuckDBPyConnection, lake: Lake, summary: Summary, files: list[LakeFile],
          tail: pa.Table) -> pa.Table:
    """One summary of these data files (``file``: the file's URI) and of the embedded tail (``file`` ''), in one scan.

    A local table's files are read by DuckDB, in parallel and only the summary's columns; an
    object-store table's through delta-rs's own file system, as the reading path does.
    """
    columns = ", ".join(f'"{c}"' for c in summary.columns)
    con.register("_tail", tail)
    sources = [f"SELECT {columns}, '' AS file, CAST(\"timestamp\" AS DATE) AS day FROM _tail"]
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
                    con.register(f"_file{number}", pa.Table.from_batches(batches))
                    sources.append(f"SELECT {columns}, {quoted_list([file.uri])[1:-1]} AS file, "
                                   f"DATE {quoted_list([file.date])[1:-1]} AS day FROM _file{number}")
    con.execute(f"CREATE OR REPLACE TEMP VIEW rows AS {' UNION ALL BY NAME '.join(sources)}")
    return con.sql(summary.sql).to_arrow_table()
