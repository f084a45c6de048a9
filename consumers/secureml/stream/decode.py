"""Decoding sealed Avro events: many at once into Arrow (Polars' Avro reader), or one with fastavro."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from functools import cache
from typing import Any

import pyarrow as pa

from secureml.audit.codec import encode_long, encode_string
from secureml.audit.schema import SCHEMA_VERSION, load_schema

# Large string/list types: what Polars decodes to, so conforming a decoded batch copies nothing.
_AVRO_TO_ARROW: dict[str, pa.DataType] = {
    "string": pa.large_string(),
    "long": pa.int64(),
    "int": pa.int32(),
    "double": pa.float64(),
    "boolean": pa.bool_(),
}


def _arrow_type(avro_type: Any) -> pa.DataType:
    if isinstance(avro_type, list):
        return _arrow_type(avro_type[1])
    if isinstance(avro_type, dict):
        if avro_type.get("logicalType") == "timestamp-micros":
            return pa.timestamp("us", tz="UTC")
        if avro_type["type"] == "array":
            return pa.large_list(_arrow_type(avro_type["items"]))
        return _arrow_type(avro_type["type"])
    return _AVRO_TO_ARROW[avro_type]


@cache
def arrow_schema(version: int = SCHEMA_VERSION) -> pa.Schema:
    """Arrow schema of decoded events (the Parquet columns, without lake bookkeeping)."""
    fields = load_schema(version)["fields"]
    return pa.schema(
        [pa.field(f["name"], _arrow_type(f["type"]), nullable=isinstance(f["type"], list)) for f in fields]
    )


@cache
def _container_header(version: int) -> tuple[bytes, bytes]:
    sync = hashlib.md5(f"secureml-audit-v{version}".encode()).digest()
    meta = {"avro.schema": json.dumps(load_schema(version)).encode(), "avro.codec": b"null"}
    body = encode_long(len(meta)) + b"".join(
        encode_string(k) + encode_long(len(v)) + v for k, v in meta.items()
    )
    return b"Obj\x01" + body + b"\x00" + sync, sync


def decode_batch(messages: Sequence[bytes], version: int = SCHEMA_VERSION) -> pa.Table:
    """Decode many Avro messages of one writer version at once into an Arrow table (current schema).

    The messages are joined into Avro container blocks and read by Polars, which is about five
    times faster than decoding them one by one; DECODE_CHUNK messages at a time, which is as
    fast as one block and halves the memory a large batch takes while it is decoded.
    """
    target = arrow_schema(SCHEMA_VERSION)
    if not messages:
        return target.empty_table()
    if len(messages) <= DECODE_CHUNK:
        return _decode_block(messages, version, target)
    return pa.concat_tables(_decode_block(messages[i : i + DECODE_CHUNK], version, target)
                            for i in range(0, len(messages), DECODE_CHUNK))


DECODE_CHUNK = 20_000


def _decode_block(messages: Sequence[bytes], version: int, target: pa.Schema) -> pa.Table:
    header, sync = _container_header(version)
    data = b"".join(messages)
    block = encode_long(len(messages)) + encode_long(len(data)) + data + sync
    return _read_container(header + block, target)


def _read_container(container: bytes, target: pa.Schema) -> pa.Table:
    import polars as pl

    return conform(pl.read_avro(io.BytesIO(container)).to_arrow(), target)


def warm_decoder() -> None:
    """Load what the first decode would (Polars, and pyarrow's lazy pandas import), ahead of it.

    About a second on a busy machine, all of it holding the GIL: paid inside the first commit, it
    delays that commit (a service's first events) and stalls the thread reading the stream.
    """
    _read_container(_container_header(SCHEMA_VERSION)[0], arrow_schema(SCHEMA_VERSION))  # no records
    pa.array([0], pa.int64())  # pyarrow imports pandas (when installed) on the first array made from Python objects


def conform(table: pa.Table, target: pa.Schema) -> pa.Table:
    """Cast a table to the target schema, adding absent (newer, optional) columns as nulls."""
    columns = []
    for field in target:
        if field.name in table.column_names:
            column = table.column(field.name)
            columns.append(column if column.type == field.type else column.cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=target)


def decode_one(message: bytes, version: int = SCHEMA_VERSION) -> dict[str, Any]:
    """Decode a single Avro message with fastavro (timestamps as integer microseconds)."""
    import fastavro

    record = fastavro.schemaless_reader(io.BytesIO(message), _parsed_schema(version), None, return_record_name=False)
    if not isinstance(record, dict):
        raise ValueError("an audit event must decode to a record")
    return record


@cache
def _parsed_schema(version: int) -> Any:
    import fastavro

    raw = load_schema(version)
    # Read timestamps as plain longs so canonical bytes can be recomputed exactly.
    plain = {**raw, "fields": [_without_logical(f) for f in raw["fields"]]}
    return fastavro.parse_schema(plain)


def _without_logical(field: dict[str, Any]) -> dict[str, Any]:
    t = field["type"]
    if isinstance(t, dict) and "logicalType" in t:
        return {**field, "type": t["type"]}
    return field
