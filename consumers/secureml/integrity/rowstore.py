"""The verifier's rows on disk: a DuckDB database in a private work directory, read back in bounded batches.

``verify`` keeps one skeleton row per event (ids, hashes, positions). As Arrow in memory that
is about 300 bytes an event, 3 GB for 10M; here the rows go to an on-disk table as they are
scanned, DuckDB sorts them out of core within ``MEMORY_LIMIT`` (spilling under the work
directory), and every check reads them back ordered, a batch at a time. The work directory
is created owner-only under ``log_dir`` (the system temp directory when ``log_dir`` is not
writable, e.g. a read-only copy of a lake) and removed on close.

The Merkle leaves need the rows in (source, offset) order. The materializer stores each source's
rows in offset order, file after file, so the rows usually arrive in that order already: while
they do, each source's leaf hashes and offsets are appended to files of their own as they go by,
and the trees read them back from there. Sorting the leaves in DuckDB and reading them back
took a third of verify at 1M events (bench/RESULTS.md, wave 3). Once a row arrives out of that
order (rows rewritten sorted otherwise, moved, or expired events rejoining them), the files are
dropped and DuckDB sorts, as before.
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
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from secureml.integrity.lakerows import LEAF_CHUNK
from secureml.integrity.merkle import LEAF_SIZE, leaf_block
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
# A source's leaves are merged from the runs of rising offsets they came in (a few per data file as the
# materializer writes them) up to this many runs; beyond (rows rewritten in another order), DuckDB sorts.
MAX_RUNS = 4096


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


class _Spooled:
    """One source's leaves and offsets in files, as they came: runs of rising offsets, merged when read."""

    def __init__(self, name: Path) -> None:
        self.offsets_path, self.leaves_path = name.with_suffix(".offsets"), name.with_suffix(".leaves")
        self.offsets = open(self.offsets_path, "wb")  # noqa: SIM115 - written batch after batch, closed by close()
        self.leaves = open(self.leaves_path, "wb")  # noqa: SIM115
        self.rows, self.last = 0, None
        self.runs: list[int] = []  # the row where each run starts

    def append(self, offsets: np.ndarray, leaves: bytes) -> None:
        """The next rows of the source, in the order they came."""
        falls = np.flatnonzero(offsets[1:] < offsets[:-1]) + 1
        if self.last is None or offsets[0] < self.last:
            self.runs.append(self.rows)
        self.runs.extend((falls + self.rows).tolist())
        self.offsets.write(offsets.tobytes())
        self.leaves.write(leaves)
        self.rows += len(offsets)
        self.last = int(offsets[-1])

    def between(self, after: int, up_to: int) -> Iterator[bytes]:
        """Leaf block of the rows at offsets in (``after``, ``up_to``], in leaf order, about LEAF_CHUNK at a time.

        The offsets are cut into windows of about LEAF_CHUNK rows; each window's rows are taken from every
        run (each run is sorted: two binary searches) and put in order by a stable sort, so rows at the same
        offset keep the order they came in, as DuckDB's ``rowid`` keeps it.
        """
        self.offsets.flush()
        self.leaves.flush()
        offsets = self._mapped()
        bounds = list(zip(self.runs, [*self.runs[1:], self.rows]))
        cursors = [start + int(np.searchsorted(offsets[start:end], after, side="right")) for start, end in bounds]
        ends = [start + int(np.searchsorted(offsets[start:end], up_to, side="right")) for start, end in bounds]
        present = [(c, e) for c, e in zip(cursors, ends) if e > c]
        if not present:
            return
        rows = sum(e - c for c, e in present)
        low, high = min(int(offsets[c]) for c, _ in present), max(int(offsets[e - 1]) for _, e in present)
        width = (high - low) // -(-rows // LEAF_CHUNK) + 1
        live = [k for k, (c, e) in enumerate(zip(cursors, ends)) if e > c]  # runs in scan order (ties keep it)
        with open(self.leaves_path, "rb") as leaves:
            for window in range(low, high + 1, width):
                offsets = self._mapped()  # mapped again each window, so the pages read before leave memory
                taken, blocks = [], []
                for k in live:
                    cut = cursors[k] + int(np.searchsorted(offsets[cursors[k]:ends[k]], window + width, side="left"))
                    if cut > cursors[k]:
                        taken.append(np.asarray(offsets[cursors[k]:cut]))
                        leaves.seek(cursors[k] * LEAF_SIZE)
                        blocks.append(leaves.read((cut - cursors[k]) * LEAF_SIZE))
                        cursors[k] = cut
                live = [k for k in live if ends[k] > cursors[k]]
                if len(blocks) == 1:
                    yield blocks[0]
                elif blocks:
                    order = np.argsort(np.concatenate(taken), kind="stable")
                    yield np.frombuffer(b"".join(blocks), dtype=np.uint8).reshape(-1, LEAF_SIZE)[order].tobytes()

    def _mapped(self) -> np.ndarray:
        """The offsets file, mapped: searched and sliced without reading it whole."""
        return np.memmap(self.offsets_path, dtype=np.int64, mode="r", shape=(self.rows,))

    def close(self, remove: bool) -> None:
        self.offsets.close()
        self.leaves.close()
        if remove:
            self.offsets_path.unlink()
            self.leaves_path.unlink()


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
        self._spool: dict[str, _Spooled] | None = {}  # None once a source's rows came in too many runs

    def add(self, rows: pa.Table | pa.RecordBatch | pa.RecordBatchReader) -> None:
        """Append skeleton rows (a reader's in one statement: a statement per batch costs more than the scan)."""
        if not isinstance(rows, pa.RecordBatchReader):
            if rows.num_rows == 0:
                return
            rows = pa.RecordBatchReader.from_batches(rows.schema, pa.table(rows).to_batches())
        rows = pa.RecordBatchReader.from_batches(rows.schema, self._spooling(rows))
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

    def _spooling(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """The batches, unchanged, their leaves appended to their sources' files on the way."""
        for batch in batches:
            if self._spool is not None and batch.num_rows:
                self._spool_leaves(batch)
            yield batch

    def _spool_leaves(self, batch: pa.RecordBatch) -> None:
        assert self._spool is not None
        runs = pc.run_end_encode(batch.column("source"))
        offsets = batch.column("source_offset").to_numpy()
        start = 0
        for source, end in zip(runs.values.to_pylist(), runs.run_ends.to_pylist()):
            if source not in self._spool:
                self._spool[source] = _Spooled(self.directory / f"leaves-{len(self._spool)}")
            spooled = self._spool[source]
            spooled.append(offsets[start:end], leaf_block(batch.column("hash").slice(start, end - start)))
            if len(spooled.runs) > MAX_RUNS:
                self._drop_spool()
                return
            start = end

    def _drop_spool(self) -> None:
        for spooled in (self._spool or {}).values():
            spooled.close(remove=True)
        self._spool = None

    def between(self, source: str, after: int, up_to: int) -> Iterator[bytes]:
        """Leaf block of one source's rows at offsets in (``after``, ``up_to``], in leaf order, in chunks."""
        if self._spool is not None:
            yield from self._spooled_between(source, after, up_to)
            return
        if self._leaf_spans is None:
            self._leaf_spans = self._sort_leaves()
        first, last = self._leaf_spans.get(source, (0, -1))
        if last < first:
            return
        for batch in self.batches(
                "SELECT hash FROM leaves WHERE rowid BETWEEN ? AND ? AND source_offset > ? AND source_offset <= ? "
                "ORDER BY rowid", (first, last, after, up_to)):
            yield leaf_block(batch.column(0))

    def _spooled_between(self, source: str, after: int, up_to: int) -> Iterator[bytes]:
        assert self._spool is not None
        if source in self._spool:
            yield from self._spool[source].between(after, up_to)

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
            for spooled in (self._spool or {}).values():
                spooled.close(remove=False)
            self.con.close()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RowStore:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
