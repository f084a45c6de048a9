"""The explorer's index of operations: one row per operation, built from per-file summaries.

A Delta data file never changes (a new version writes new files), so each file is summarised
once per process, keyed by its path in the table; a new table version only costs the summaries
of its new files (a day's compaction, a materializer's commit) plus the unmaterialised embedded
tail, and a page then reads the index instead of the lake: the operations list and its filters
run in memory, and an operation's timeline reads only the files whose time span holds its events.

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
from secureml.lake.table import Lake, LakeFile, Snapshot
from secureml.query.logs import embedded_tail

# The columns a summary reads: a few narrow ones of each file, never the payloads.
COLUMNS = ["operation_id", "operation_name", "seq", "event_type", "timestamp", "user", "user_id", "regulations",
           "status", "event_count"]
# Each file's (or the tail's) operations. The listed fields come from the operation's start (seq 0)
# and its audit_closed event; first_ts/last_ts/last_seq span every event of the operation there.
_PART_SQL = """
SELECT file, operation_id,
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
FROM rows WHERE operation_id IS NOT NULL GROUP BY file, operation_id
"""
# The parts of every file merged: an operation's events may lie in several files (its day's
# compacted file and a later commit, or the embedded tail).
_MERGE_SQL = """
SELECT operation_id, any_value(operation_name) AS operation_name, min(started) AS started,
  any_value("user") AS "user", any_value(regulations) AS regulations,
  coalesce(max(status), 'running') AS status, max(event_count) AS event_count, max(closed) AS closed,
  min(first_ts) AS first_ts, max(last_ts) AS last_ts, max(last_seq) AS last_seq,
  list_distinct(flatten(list(list_concat(coalesce(users, []), coalesce(subjects, []))))) AS people
FROM parts GROUP BY operation_id
"""


@dataclass(frozen=True)
class Operations:
    """Every operation of one lake state.

    ``listed``: the operations with a start event, newest start first (the operations page);
    ``people``: (operation_id, who) for each user or data subject named by one of its events.
    """

    listed: pa.Table
    summaries: pa.Table  # every operation, listed or not: its name, span, last seq and status
    people: pa.Table

    def summary(self, operation_id: str) -> dict[str, Any] | None:
        """One operation's row of ``summaries`` (None when no event names it)."""
        at = pc.index(self.summaries.column("operation_id"), operation_id).as_py()
        return None if at < 0 else self.summaries.slice(at, 1).to_pylist()[0]

    def involving(self, forms: list[str]) -> pa.Array:
        """Ids of the operations whose events name any of these stored forms as user or data subject."""
        hit = pc.is_in(self.people.column("who"), pa.array(forms, pa.string()))
        return pc.unique(pc.filter(self.people.column("operation_id"), hit))


class OperationIndex:
    """The operations of one log directory, brought up to date on each call from what changed."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._lake = Lake(log_dir)
        self._parts: dict[str, pa.Table] = {}  # data file path in the table -> its part
        self._current: tuple[tuple[int | None, int], Operations] | None = None  # (lake state, index)
        self._lock = threading.Lock()  # one build at a time: a second page waits for it instead of repeating it

    def current(self) -> Operations:
        """The index of the lake's newest state (its table version and the embedded log's tail)."""
        snapshot = self._lake.snapshot()
        tail = embedded_tail(self.log_dir, snapshot)
        state = (snapshot.version, snapshot.rows + tail.num_rows)
        with self._lock:
            if self._current is None or self._current[0] != state:
                self._current = (state, self._build(snapshot, tail))
            return self._current[1]

    def _build(self, snapshot: Snapshot, tail: pa.Table) -> Operations:
        con = duckdb.connect(config={"threads": 2})
        try:
            con.execute("SET TimeZone = 'UTC'")
            new = [f for f in snapshot.files if f.path not in self._parts]
            read = _scan(con, self._lake, new, tail)
            files = read.column("file")
            for f in new:  # a file without events (or gone: the reading path serves the others too) has no rows
                self._parts[f.path] = read.filter(pc.equal(files, f.uri))
            # Files no longer in the table (compacted, vacuumed) drop out of the cache here.
            self._parts = {f.path: self._parts[f.path] for f in snapshot.files}
            con.register("parts", pa.concat_tables([*self._parts.values(), read.filter(pc.equal(files, ""))]))
            con.execute(f"CREATE TEMP TABLE merged AS {_MERGE_SQL}")
            return Operations(
                listed=con.sql("SELECT * EXCLUDE (people, first_ts, last_ts, last_seq) FROM merged "
                               "WHERE started IS NOT NULL ORDER BY started DESC, operation_id").to_arrow_table(),
                summaries=con.sql("SELECT operation_id, operation_name, status, first_ts, last_ts, last_seq "
                                  "FROM merged").to_arrow_table(),
                people=con.sql("SELECT DISTINCT operation_id, unnest(people) AS who FROM merged").to_arrow_table(),
            )
        finally:
            con.close()


def _scan(con: duckdb.DuckDBPyConnection, lake: Lake, files: list[LakeFile], tail: pa.Table) -> pa.Table:
    """The parts of these data files (``file``: the file's URI) and of the embedded tail (``file`` ''), in one scan.

    A local table's files are read by DuckDB, in parallel and only the summary's columns; an
    object-store table's through delta-rs's own file system, as the reading path does.
    """
    columns = ", ".join(f'"{c}"' for c in COLUMNS)
    con.register("_tail", tail.select(COLUMNS))
    sources = [f"SELECT {columns}, '' AS file FROM _tail"]
    if lake.local:
        present = [f.uri for f in files if os.path.exists(f.uri)]
        if present:
            sources.append(f"SELECT {columns}, filename AS file FROM read_parquet({quoted_list(present)}, "
                           "filename = true, union_by_name = true)")
    else:
        for number, file in enumerate(files):
            with suppress(FileNotFoundError):
                batches = list(lake.batches(file, COLUMNS))
                con.register(f"_file{number}", pa.Table.from_batches(batches) if batches else tail.select(COLUMNS))
                sources.append(f"SELECT {columns}, {quoted_list([file.uri])[1:-1]} AS file FROM _file{number}")
    con.execute(f"CREATE TEMP VIEW rows AS {' UNION ALL BY NAME '.join(sources)}")
    return con.sql(_PART_SQL).to_arrow_table()
