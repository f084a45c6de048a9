"""Rows of the lake: the event columns (from the Avro schema), where each event was read from, its date."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import pyarrow as pa
import pyarrow.compute as pc

from secureml.audit.exceptions import AuditValidationError
from secureml.stream.decode import arrow_schema, decode_sealed

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


def events_table(
    sources: list[str], offsets: list[int], versions: list[int], values: list[bytes],
    refuse: Callable[[int, str], None] | None = None,
) -> pa.Table:
    """Decode sealed Avro messages into lake rows (event fields + source + source_offset).

    A message that is not sealed or does not decode is left out and handed to ``refuse`` (its index
    in ``values``, why); without ``refuse`` it is an error.
    """
    if len(set(versions)) <= 1:
        decoded, refused = decode_sealed(values, versions[0] if versions else 1)
        order = None
    else:  # several writer versions: decode each group, then restore the original order
        groups: dict[int, list[int]] = {}
        for i, v in enumerate(versions):
            groups.setdefault(v, []).append(i)
        parts, refused = [], {}
        for v, idx in groups.items():
            part, part_refused = decode_sealed([values[i] for i in idx], v)
            parts.append(part)
            refused.update({idx[i]: reason for i, reason in part_refused.items()})
        decoded = pa.concat_tables(parts)
        order = [i for idx in groups.values() for i in idx if i not in refused]
    if refused:
        if refuse is None:
            index, reason = next(iter(refused.items()))
            raise AuditValidationError(f"values[{index}]", f"must be a sealed event of its schema, and (offset "
                                       f"{offsets[index]}) is not: {reason}", where="events_table")
        for index in sorted(refused):
            refuse(index, refused[index])
        sources = [s for i, s in enumerate(sources) if i not in refused]
        offsets = [o for i, o in enumerate(offsets) if i not in refused]
    source_column = (
        pa.repeat(pa.scalar(sources[0], pa.large_string()), len(sources))
        if sources and sources.count(sources[0]) == len(sources) else pa.array(sources, pa.large_string())
    )
    if order is not None:  # (before the source columns, which are in the original order already)
        decoded = decoded.take(pa.array(sorted(range(len(order)), key=order.__getitem__)))
    table = decoded.append_column(lake_schema().field("source"), source_column)
    return table.append_column(lake_schema().field("source_offset"), pa.array(offsets, pa.int64()))
