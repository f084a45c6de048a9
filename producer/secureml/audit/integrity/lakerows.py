"""Reading columns of the rows one manifest snapshot of the lake holds, with DuckDB."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb
import pyarrow as pa

from secureml.audit.lake import Lake, Manifest, lake_schema

_ATTEMPTS = 3


def snapshot_rows(
    lake: Lake, columns: Sequence[str], where: str = "", params: Sequence[Any] = (), order_by: str = ""
) -> tuple[Manifest, pa.Table]:
    """A manifest and the chosen columns of the rows of its live files (``where`` uses ``?`` params).

    A compaction may retire a file between reading the manifest and reading the file: then
    the manifest is read again.
    """
    selected = ", ".join(f'"{c}"' for c in columns)
    for attempt in range(_ATTEMPTS):
        manifest = lake.snapshot()
        paths = lake.paths(manifest)
        if not paths:
            return manifest, pa.schema([lake_schema().field(c) for c in columns]).empty_table()
        sql = f"SELECT {selected} FROM read_parquet(?, union_by_name = true, hive_partitioning = false)"
        sql += (f" WHERE {where}" if where else "") + (f" ORDER BY {order_by}" if order_by else "")
        con = duckdb.connect(config={"threads": 2})
        try:
            return manifest, con.sql(sql, params=[paths, *params]).to_arrow_table()
        except duckdb.IOException:
            if attempt == _ATTEMPTS - 1 or all(p in lake.paths(lake.snapshot()) for p in paths):
                raise
        finally:
            con.close()
    raise AssertionError("unreachable")
