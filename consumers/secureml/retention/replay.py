"""Replays do not resurrect expired events: the materializer drops rows a retention record removed.

A replay (``materialize --replay``, or a lake rebuilt from Kafka offset 0) reads events the
lake once held and retention deleted; the records list their positions, so they are skipped
while the source positions still advance past them.
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

_cache: dict[Path, tuple[tuple[str, ...], dict[str, pa.Array]]] = {}
_guard = threading.Lock()


def _expired_positions(lake: Lake) -> dict[str, pa.Array]:
    """Source -> offsets removed by the lake's retention records (read again only when records are added)."""
    directory = records_dir(lake.root / RETENTION_DIR)
    if not directory.is_dir():
        return {}
    names = tuple(sorted(p.name for p in directory.iterdir() if p.name.endswith(REMOVED_SUFFIX)))
    with _guard:
        cached = _cache.get(directory)
        if cached is not None and cached[0] == names:
            return cached[1]
        if not names:
            return {}
        removed = pa.concat_tables(pq.read_table(directory / n, columns=["source", "source_offset"]) for n in names)
        grouped = removed.group_by("source").aggregate([("source_offset", "list")])
        positions = {s: pa.array(o, pa.int64()) for s, o in zip(grouped["source"].to_pylist(),
                                                                grouped["source_offset_list"].to_pylist())}
        _cache[directory] = (names, positions)
        return positions


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
