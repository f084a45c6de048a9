"""Reading the rows one version of the lake holds (with DuckDB), and ordering them by source."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from secureml.integrity.merkle import leaf_block
from secureml.lake.catalog import events_sql
from secureml.lake.rows import lake_schema
from secureml.lake.table import Lake, Snapshot


def snapshot_rows(
    lake: Lake, columns: Sequence[str], where: str = "", params: Sequence[Any] = (), order_by: str = "",
    snapshot: Snapshot | None = None,
) -> tuple[Snapshot, pa.Table]:
    """A table version (the newest unless given) and the chosen columns of its rows (``where`` uses ``?``)."""
    snapshot = snapshot or lake.snapshot()
    con = duckdb.connect(config={"threads": 2})
    try:
        source = events_sql(con, lake, snapshot)
        if source is None:
            return snapshot, pa.schema([lake_schema().field(c) for c in columns]).empty_table()
        selected = ", ".join(f'"{c}"' for c in columns)
        sql = f"SELECT {selected} FROM ({source})" + (f" WHERE {where}" if where else "")
        sql += f" ORDER BY {order_by}" if order_by else ""
        return snapshot, con.sql(sql, params=list(params)).to_arrow_table()
    finally:
        con.close()


@dataclass(frozen=True)
class Grouped:
    """Rows sorted by a key column, then by a column within each key."""

    names: list[str]  # the keys, by index
    group: np.ndarray  # key index of each sorted row
    order: np.ndarray  # row index of each sorted row
    first: np.ndarray  # True where a sorted row starts its key's run

    @property
    def last(self) -> np.ndarray:
        """Sorted positions of the last row of every key's run."""
        return np.flatnonzero(np.append(self.first[1:], True))


def grouped(rows: pa.Table, key: str, within: str) -> Grouped:
    """Sort rows by ``key``, then ``within`` (numbers), without sorting strings."""
    encoded = pc.dictionary_encode(rows.column(key)).combine_chunks()
    group = encoded.indices.to_numpy(zero_copy_only=False)
    order = np.lexsort((rows.column(within).to_numpy(), group))
    group = group[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = group[1:] != group[:-1]
    return Grouped(encoded.dictionary.to_pylist(), group, order, first)


def by_source(rows: pa.Table) -> tuple[dict[str, tuple[int, int]], np.ndarray, pa.ChunkedArray]:
    """Rows in (source, source_offset) order, the Merkle leaf order: each source's span, the offsets, the hashes."""
    sources = grouped(rows, "source", "source_offset")
    starts = np.flatnonzero(sources.first)
    spans = {sources.names[sources.group[start]]: (int(start), int(end))
             for start, end in zip(starts, [*starts[1:], len(sources.order)])}
    offsets = rows.column("source_offset").to_numpy()[sources.order]
    return spans, offsets, rows.column("hash").take(pa.array(sources.order))


LEAF_CHUNK = 1 << 16  # leaf hashes handed over at a time


class Leaves(Protocol):
    """Rows as Merkle leaves: each source's leaf hashes in offset order (``RowStore`` on disk, ``TableLeaves``)."""

    def between(self, source: str, after: int, up_to: int) -> Iterator[bytes]:
        """Leaf block (``merkle.leaf_block``) of one source's rows at offsets in (``after``, ``up_to``], in order, in
        chunks."""
        ...


class TableLeaves:
    """``Leaves`` over rows held in memory (``source``, ``source_offset``, ``hash``)."""

    def __init__(self, rows: pa.Table) -> None:
        self._spans, self._offsets, self._hashes = by_source(rows)

    def between(self, source: str, after: int, up_to: int) -> Iterator[bytes]:
        """Leaf block of one source's rows at offsets in (``after``, ``up_to``], in order, in chunks."""
        begin, end = self._spans.get(source, (0, 0))
        lo = begin + int(np.searchsorted(self._offsets[begin:end], after, side="right"))
        hi = begin + int(np.searchsorted(self._offsets[begin:end], up_to, side="right"))
        for start in range(lo, hi, LEAF_CHUNK):
            yield leaf_block(self._hashes.slice(start, min(LEAF_CHUNK, hi - start)))


def leaves_of(rows: pa.Table | Leaves) -> Leaves:
    """Rows as ``Leaves`` (a table is indexed by source in memory)."""
    return TableLeaves(rows) if isinstance(rows, pa.Table) else rows
