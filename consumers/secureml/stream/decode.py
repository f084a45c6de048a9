"""Decoding sealed Avro events: many at once into Arrow (the native decoder, else Polars' Avro reader), or one
with fastavro."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from functools import cache
from typing import Any

import pyarrow as pa

from secureml.audit import accelerator
from secureml.audit.codec import encode_long, encode_string, rejection
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


def decode_sealed(messages: Sequence[bytes], version: int = SCHEMA_VERSION) -> tuple[pa.Table, dict[int, str]]:
    """The events among messages of one writer version (current schema), and why each other one is not an event.

    The reasons, by index: ``codec.rejection``'s for a message whose seal does not match, ``Avro decoding
    failed: ...`` for a sealed one that does not decode (forged), the very texts of checking and decoding
    one message at a time. The native decoder checks the seals and decodes in one pass over the bytes
    with the GIL released; without it, hashlib checks the seals and Polars decodes the rest, one by one
    with fastavro only when a block does not decode.
    """
    native = accelerator.native
    if native is not None:
        array, failures = native.decode_events(
            messages if isinstance(messages, list) else list(messages), _native_fields(version), True)
        table = conform(pa.Table.from_batches([pa.RecordBatch.from_struct_array(array)]), arrow_schema(SCHEMA_VERSION))
        return table, {index: rejection(version, messages[index]) if why is None else _undecodable(
            messages[index], version, why) for index, why in failures}  # type: ignore[misc]  # refused: a reason
    refused = {index: reason for index, message in enumerate(messages)
               if (reason := rejection(version, message)) is not None}
    sealed = [m for index, m in enumerate(messages) if index not in refused] if refused else messages
    try:
        return decode_batch(sealed, version), refused
    except Exception:  # noqa: BLE001 - sealed yet undecodable (forged): sort them out one by one
        kept = []
        for index, message in enumerate(messages):
            if index not in refused:
                try:
                    kept.append(decode_batch([message], version))
                except Exception as exc:  # noqa: BLE001 - any failure of the decoder means the bytes are not an event
                    refused[index] = _undecodable(message, version, str(exc))
        table = pa.concat_tables(kept) if kept else arrow_schema(SCHEMA_VERSION).empty_table()
        return table, dict(sorted(refused.items()))


def _undecodable(message: bytes, version: int, why: str) -> str:
    """The reason a sealed message the native decoder refused is not an event: fastavro's words, as without it."""
    try:
        decode_one(message, version)
    except Exception as exc:  # noqa: BLE001 - any failure of the decoder means the bytes are not an event
        return f"Avro decoding failed: {exc}"
    return f"Avro decoding failed: {why}"  # stricter than fastavro (bytes left over, an int beyond 32 bits)


@cache
def _native_fields(version: int) -> list[tuple[str, str, bool]]:
    """The writer schema as the native decoder takes it: (name, kind, nullable) per field."""
    fields = []
    for f in load_schema(version)["fields"]:
        avro_type = f["type"][1] if isinstance(f["type"], list) else f["type"]
        if isinstance(avro_type, dict):
            avro_type = ("timestamp" if avro_type.get("logicalType") == "timestamp-micros" else
                         "string_array" if avro_type == {"type": "array", "items": "string"} else avro_type["type"])
        fields.append((f["name"], avro_type, isinstance(f["type"], list)))
    return fields


def _decode_block(messages: Sequence[bytes], version: int, target: pa.Schema) -> pa.Table:
    header, sync = _container_header(version)
    data = b"".join(messages)
    block = encode_long(len(messages)) + encode_long(len(data)) + data + sync
    return _read_container(header + block, target)


def _read_container(container: bytes, target: pa.Schema) -> pa.Table:
    import polars as pl

    return conform(pl.read_avro(io.BytesIO(container)).to_arrow(), target)


def warm_decoder() -> None:
    """Load what the first decode would (pyarrow's lazy pandas import; Polars without the native decoder), ahead of it.

    About a second on a busy machine, all of it holding the GIL: paid inside the first commit, it
    delays that commit (a service's first events) and stalls the thread reading the stream. With the
    native decoder Polars is never loaded: a second of CPU a run saved.
    """
    if accelerator.native is None:
        _read_container(_container_header(SCHEMA_VERSION)[0], arrow_schema(SCHEMA_VERSION))  # no records
    else:
        decode_sealed([])
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
