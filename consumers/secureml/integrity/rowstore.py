"""The verifier's rows on disk: a DuckDB database in a private work directory, read back in bounded batches.

``verify`` keeps one skeleton row per event (ids, hashes, positions). As Arrow in memory that
is about 300 bytes an event, 3 GB for 10M; here the rows go to an on-disk table as they are
scanned, DuckDB sorts them out of core within ``MEMORY_LIMIT`` (spilling under the work
directory), and every check reads them back ordered, a batch at a time. The work directory
is created owner-only under ``log_dir`` (the system temp directory when ``log_dir`` is not
writable, e.g. a read-only copy of a lake) and removed on close.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import duckdb
import pyarrow as pa

from secureml.integrity.scan import SKELETON

logger = logging.getLogger(__name__)

# DuckDB's buffer pool; sorts beyond it spill to the work directory. One thread: each thread of a
# sort pins blocks of its own (two ran out of a 96 MB pool sorting 1M rows at once).
MEMORY_LIMIT = "64MB"
THREADS = 1
BATCH_ROWS = 16_384
# Rows DuckDB sorts at once: one sort of 10M rows ran out of a 100 MB pool, so the checks' orders
# are built from sorts of pieces this size (operations by a hash of their id, sources by offset range).
SORT_ROWS = 250_000
# Merkle leaf order: by source, then offset; ties (rows stored twice) in the order they were scanned.
_LEAF_ORDER = "source, source_offset, rowid"


def work_directory(parent: Path, purpose: str) -> Path:
    """A fresh owner-only directory under ``parent``, else under the system temp directory."""
    try:
        return Path(tempfile.mkdtemp(prefix=f".{purpose}-", dir=parent))
    except OSError as exc:
        logger.warning("cannot write %s's work files under %s (%s): using the system temp directory", purpose,
                       parent, exc)
        return Path(tempfile.mkdtemp(prefix=f"secureml-audit-{purpose}-"))


def _connect(directory: Path) -> duckdb.DuckDBPyConnection:
    """A DuckDB database in ``directory`` that holds at most MEMORY_LIMIT and spills the rest beside it."""
    # A database file, not an in-memory one: in memory, tables' blocks compete with the sorts'
    # pinned blocks for the limit, and a 1M-event sort ran out of memory at 100 MB.
    con = duckdb.connect(str(directory / "rows.duckdb"), config={
        "threads": THREADS, "memory_limit": MEMORY_LIMIT, "temp_directory": str(directory / "spill"),
        "preserve_insertion_order": True})
    con.execute("PRAGMA disable_checkpoint_on_shutdown")  # the file is deleted after: writing it out is waste
    con.execute("SET enable_progress_bar = false")  # long statements would draw one on the caller's stdout
    return con


@contextmanager
def spilling_connection(parent: Path, purpose: str) -> Iterator[duckdb.DuckDBPyConnection]:
    """A bounded DuckDB connection (``_connect``) in a work directory under ``parent``, removed afterwards."""
    directory = work_directory(parent, purpose)
    try:
        con = _connect(directory)
        try:
            yield con
        finally:
            con.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class RowStore:
    """Skeleton rows (``scan.SKELETON``) in a DuckDB table ``rows``; ``con`` runs SQL over it."""

    def __init__(self, parent: Path) -> None:
        self.directory = work_directory(parent, "verify")
        try:
            self.con = _connect(self.directory)
            self.con.register("skeleton", SKELETON.empty_table())
            self.con.execute("CREATE TABLE rows AS SELECT * FROM skeleton")
            self.con.unregister("skeleton")
        except BaseException:
            shutil.rmtree(self.directory, ignore_errors=True)
            raise
        self._leaf_spans: dict[str, tuple[int, int]] | None = None

    def add(self, rows: pa.Table | pa.RecordBatch | pa.RecordBatchReader) -> None:
        """Append skeleton rows (a reader's in one statement: a statement per batch costs more than the scan)."""
        if not isinstance(rows, pa.RecordBatchReader) and rows.num_rows == 0:
            return
        self.con.register("incoming", rows)
        try:
            self.con.execute("INSERT INTO rows SELECT * FROM incoming")
        finally:
            self.con.unregister("incoming")
        self._leaf_spans = None

    def count(self) -> int:
        """Rows stored."""
        return int(self.con.execute("SELECT count(*) FROM rows").fetchall()[0][0])

    def sources(self) -> list[str]:
        """The distinct sources of the rows, sorted."""
        return sorted(r[0] for r in self.con.execute("SELECT DISTINCT source FROM rows").fetchall())

    def batches(self, sql: str, params: Sequence[Any] = ()) -> Iterator[pa.RecordBatch]:
        """The result of a query, a batch of at most BATCH_ROWS at a time."""
        reader = self.con.sql(sql, params=list(params)).to_arrow_reader(BATCH_ROWS)
        yield from reader

    def by_operation(self, only: Iterable[str] | None = None) -> Iterator[pa.RecordBatch]:
        """Every row (of the ``only`` operations, when given), each operation's together, ordered by seq, then
        position (the chain checks' order).

        The operations come in buckets of about SORT_ROWS rows (by a hash of their id), each sorted on its own.
        """
        chosen = "TRUE"
        if only is not None:
            self.con.register("wanted", pa.table({"operation_id": pa.array(list(only), pa.large_string())}))
            try:
                self.con.execute("CREATE OR REPLACE TEMP TABLE chosen AS SELECT * FROM wanted")
            finally:
                self.con.unregister("wanted")
            chosen = "operation_id IN (SELECT operation_id FROM chosen)"
        try:
            rows = int(self.con.execute(f"SELECT count(*) FROM rows WHERE {chosen}").fetchall()[0][0])
            buckets = max(1, -(-rows // SORT_ROWS))
            for bucket in range(buckets):
                yield from self.batches(f"SELECT * FROM rows WHERE {chosen} AND hash(operation_id) % ? = ? "
                                        "ORDER BY operation_id, seq, source, source_offset, rowid", (buckets, bucket))
        finally:
            self.con.execute("DROP TABLE IF EXISTS chosen")

    def count_of_type(self, event_type: str) -> int:
        """How many stored rows are events of one type."""
        found = self.con.execute("SELECT count(*) FROM rows WHERE event_type = ?", [event_type]).fetchone()
        return int(found[0]) if found else 0

    def columns(self, names: Sequence[str]) -> pa.Table:
        """Chosen columns of every row, in memory (for what still needs them whole)."""
        return self.con.sql(f"SELECT {', '.join(names)} FROM rows").to_arrow_table()

    def between(self, source: str, after: int, up_to: int) -> Iterator[pa.Array]:
        """Hashes of one source's rows at offsets in (``after``, ``up_to``], in leaf order, in chunks."""
        if self._leaf_spans is None:
            self._leaf_spans = self._sort_leaves()
        first, last = self._leaf_spans.get(source, (0, -1))
        if last < first:
            return
        for batch in self.batches(
                "SELECT hash FROM leaves WHERE rowid BETWEEN ? AND ? AND source_offset > ? AND source_offset <= ? "
                "ORDER BY rowid", (first, last, after, up_to)):
            yield batch.column(0)

    def _sort_leaves(self) -> dict[str, tuple[int, int]]:
        """Store the rows' (source, offset, hash) in leaf order once; each source's rowid span in it."""
        self.con.execute("DROP TABLE IF EXISTS leaves")
        self.con.execute("CREATE TABLE leaves AS SELECT source, source_offset, hash FROM rows LIMIT 0")
        spans, start = {}, 0
        for source, count, low, high in self.con.execute(
                "SELECT source, count(*), min(source_offset), max(source_offset) FROM rows GROUP BY source "
                "ORDER BY source").fetchall():
            width = (high - low) // -(-count // SORT_ROWS) + 1  # offset ranges of about SORT_ROWS rows each
            for piece in range(low, high + 1, width):
                self.con.execute(f"INSERT INTO leaves SELECT source, source_offset, hash FROM rows WHERE source = ? "
                                 f"AND source_offset >= ? AND source_offset < ? ORDER BY {_LEAF_ORDER}",
                                 [source, piece, piece + width])
            spans[source] = (start, start + count - 1)
            start += count
        return spans

    def close(self) -> None:
        """Close the database and remove the work directory."""
        try:
            self.con.close()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RowStore:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
