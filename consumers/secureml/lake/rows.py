"""Rows of the lake: the event columns (from the Avro schema), where each event was read from, its date."""

from __future__ import annotations

from functools import cache

import pyarrow as pa
import pyarrow.compute as pc

from secureml.stream.decode import arrow_schema, decode_batch

PARTITION_KEY = "event_date"


@cache
def lake_schema() -> pa.Schema:
    """Columns stored in every Parquet file: the event fields, then the source and the position read."""
    return arrow_schema().append(pa.field("source", pa.large_string(), nullable=False)).append(
        pa.field("source_offset", pa.int64(), nullable=False)
    )


@cache
def table_schema() -> pa.Schema:
    """Columns of the Delta table: the stored columns plus the partition column (UTC date of the event)."""
    return lake_schema().append(pa.field(PARTITION_KEY, pa.date32(), nullable=False))


def with_partition(rows: pa.Table) -> pa.Table:
    """Rows with the ``event_date`` partition column added (the UTC date of ``timestamp``)."""
    if PARTITION_KEY in rows.column_names:
        return rows
    dates = pc.cast(pc.cast(rows["timestamp"], pa.timestamp("us")), pa.date32())
    return rows.append_column(table_schema().field(PARTITION_KEY), dates)


def events_table(sources: list[str], offsets: list[int], versions: list[int], values: list[bytes]) -> pa.Table:
    """Decode sealed Avro messages into lake rows (event fields + source + source_offset)."""
    if len(set(versions)) <= 1:
        decoded = decode_batch(values, versions[0] if versions else 1)
        order = None
    else:  # several writer versions: decode each group, then restore the original order
        groups: dict[int, list[int]] = {}
        for i, v in enumerate(versions):
            groups.setdefault(v, []).append(i)
        decoded = pa.concat_tables(decode_batch([values[i] for i in idx], v) for v, idx in groups.items())
        order = [i for idx in groups.values() for i in idx]
    source_column = (
        pa.repeat(pa.scalar(sources[0], pa.large_string()), len(sources))
        if sources and sources.count(sources[0]) == len(sources) else pa.array(sources, pa.large_string())
    )
    table = decoded.append_column(lake_schema().field("source"), source_column)
    table = table.append_column(lake_schema().field("source_offset"), pa.array(offsets, pa.int64()))
    if order is not None:
        table = table.take(pa.array(sorted(range(len(order)), key=order.__getitem__)))
    return table
