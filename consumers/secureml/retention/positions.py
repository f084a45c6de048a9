"""What retention removed, by source position: replays skip it, proofs put its leaves back.

A replay (``materialize --replay``, or a lake rebuilt from Kafka offset 0) reads events the
lake once held and retention deleted; the records list their positions, so they are skipped
while the source positions still advance past them. Inclusion and consistency proofs rebuild
Merkle trees from the lake's rows: the removed events' leaves (hashes the records keep) fill
the positions they left, so the trees the checkpoints signed still come out.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from secureml.lake.table import Lake
from secureml.retention.holds import RETENTION_DIR
from secureml.retention.records import REMOVED_SUFFIX, records_dir

_cache: dict[Path, tuple[tuple[str, ...], pa.Table]] = {}
_guard = threading.Lock()


LEAVES = pa.schema([("source", pa.large_string()), ("source_offset", pa.int64()), ("hash", pa.large_string())])


def removed_leaves(lake: Lake) -> pa.Table:
    """(source, source_offset, hash) of every event the lake's retention records removed (cached per listing)."""
    directory = records_dir(lake.root / RETENTION_DIR)
    if not directory.is_dir():
        return LEAVES.empty_table()
    names = tuple(sorted(p.name for p in directory.iterdir() if p.name.endswith(REMOVED_SUFFIX)))
    with _guard:
        cached = _cache.get(directory)
        if cached is not None and cached[0] == names:
            return cached[1]
        removed = pa.concat_tables([pq.read_table(directory / n, columns=LEAVES.names).cast(LEAVES) for n in names]
                                   or [LEAVES.empty_table()])
        _cache[directory] = (names, removed)
        return removed


def _expired_positions(lake: Lake) -> dict[str, pa.Array]:
    """Source -> offsets removed by the lake's retention records."""
    removed = removed_leaves(lake)
    if not removed.num_rows:
        return {}
    grouped = removed.group_by("source").aggregate([("source_offset", "list")])
    return {s: pa.array(o, pa.int64()) for s, o in zip(grouped["source"].to_pylist(),
                                                       grouped["source_offset_list"].to_pylist())}


def with_removed_leaves(lake: Lake, rows: pa.Table) -> pa.Table:
    """Rows (``source``, ``source_offset``, ``hash``) and the removed events' leaves not among them."""
    removed = removed_leaves(lake)
    if not removed.num_rows:
        return rows
    removed = removed.select(rows.column_names).cast(rows.schema)
    here = position_keys(rows)
    return pa.concat_tables([rows, removed.filter(pc.invert(pc.is_in(position_keys(removed), value_set=here)))])


def position_keys(rows: pa.Table | pa.RecordBatch) -> pa.Array:
    """``source#offset`` of every row: one key per event position, to match rows against removed events."""
    offsets = pc.cast(rows["source_offset"], pa.large_string())
    keys = pc.binary_join_element_wise(pc.cast(rows["source"], pa.large_string()), offsets,
                                       pa.scalar("#", pa.large_string()))
    return keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys


def without_expired(lake: Lake, tables: dict[str, pa.Table]) -> dict[str, pa.Table]:
    """The rows to commit, without those retention removed before (only a replay reads them again)."""
    expired = _expired_positions(lake)
    if not expired:
        return tables
    kept = {}
    for source, rows in tables.items():
        offsets = expired.get(source)
        if offsets is not None and rows.num_rows:
            rows = rows.filter(pc.invert(pc.is_in(rows["source_offset"], value_set=offsets)))
        kept[source] = rows
    return kept
