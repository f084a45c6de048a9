"""The Avro codec: byte-identical to fastavro, sealed messages, batch decoding, schema evolution."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import fastavro
import pyarrow as pa
import pytest

from secureml.audit import codec, schema
from secureml.audit.codec import canonical_bytes, encode_record, event_hash, is_sealed, seal
from secureml.stream import decode
from secureml.stream.decode import arrow_schema, decode_batch, decode_one


def random_record(rng: random.Random) -> dict[str, Any]:
    """A record with every field set or null at random, timestamps as integer micros."""
    record: dict[str, Any] = {}
    for field in schema.load_schema()["fields"]:
        kind = field["type"]
        optional = isinstance(kind, list)
        if optional and rng.random() < 0.4:
            record[field["name"]] = None
            continue
        base = kind[1] if optional else kind
        if isinstance(base, dict) and base.get("type") == "array":
            value: Any = [rng.choice(["a", "é", "longer-text-" * rng.randint(0, 9)]) for _ in range(rng.randint(0, 4))]
        elif isinstance(base, dict):  # timestamp-micros
            value = rng.randint(0, 2**53)
        elif base in ("long", "int"):
            value = rng.randint(-(2**31), 2**31 - 1) if base == "int" else rng.randint(-(2**62), 2**62)
        elif base == "double":
            value = rng.uniform(-1e6, 1e6)
        elif base == "boolean":
            value = rng.random() < 0.5
        else:
            value = "".join(rng.choice("abcé€\n\"{}") for _ in range(rng.randint(0, 80)))
        record[field["name"]] = value
    return record


def test_encoding_is_byte_identical_to_fastavro() -> None:
    """500 random records encode to exactly fastavro's bytes and decode back unchanged."""
    rng = random.Random(1)
    parsed = decode._parsed_schema(schema.SCHEMA_VERSION)
    for _ in range(500):
        record = random_record(rng)
        ours = encode_record(record)
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed, record)
        assert ours == buf.getvalue()
        assert decode_one(ours) == record


def test_seal_detects_any_changed_byte() -> None:
    """A sealed message fails the check when any single byte changes or it is cut short."""
    message, digest = seal(canonical_bytes(random_record(random.Random(2)) | {"hash": ""}))
    assert is_sealed(message) and message.endswith(digest.encode())
    for i in range(0, len(message), 7):
        broken = bytearray(message)
        broken[i] ^= 0x01
        assert not is_sealed(bytes(broken))
    assert not is_sealed(message[:-1]) and not is_sealed(b"") and not is_sealed(b"\x80\x01" + b"0" * 64)


def test_batch_decode_equals_one_by_one() -> None:
    """Decoding 300 messages as one container block gives the same rows as fastavro one by one."""
    rng = random.Random(3)
    records = [random_record(rng) for _ in range(300)]
    table = decode_batch([encode_record(r) for r in records])
    assert table.schema == arrow_schema()
    for column in ("timestamp", "operation_start"):
        table = table.set_column(table.schema.get_field_index(column), column, table[column].cast(pa.int64()))
    assert table.to_pylist() == records
    assert event_hash(canonical_bytes(records[0])) == event_hash(canonical_bytes(table.to_pylist()[0]))


def test_warming_the_decoder_loads_polars_before_any_message() -> None:
    """warm_decoder() (run while a Kafka materializer joins its group) leaves the first decode nothing to import:
    Polars without the native decoder; with it, Polars is not loaded at all."""
    for native, loaded in (("0", True), ("1", False)):
        script = ("import sys; from secureml.stream.decode import warm_decoder; assert 'polars' not in sys.modules; "
                  f"warm_decoder(); assert ('polars' in sys.modules) is {loaded}; print('warm')")
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "SECUREML_AUDIT_NATIVE": native})
        assert done.returncode == 0 and done.stdout.strip() == "warm", done.stderr


@pytest.fixture
def schema_v2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """A version 2 schema that adds an optional field, as schema evolution allows."""
    v1 = schema.load_schema(1)
    fields = list(v1["fields"])
    fields.insert(len(fields) - 2, {"name": "tenant", "type": ["null", "string"], "default": None})
    (tmp_path / "audit_event.v2.avsc").write_text(json.dumps({**v1, "fields": fields}))
    dirs = schema.schema_dirs()
    monkeypatch.setattr(schema, "schema_dirs", lambda: [*dirs, tmp_path])
    for cached in (schema.load_schema, codec.field_encoders, decode._parsed_schema, decode._container_header):
        cached.cache_clear()
    yield 2
    for cached in (schema.load_schema, codec.field_encoders, decode._parsed_schema, decode._container_header):
        cached.cache_clear()


def test_reader_takes_old_and_new_schema_versions(schema_v2: int) -> None:
    """Messages written with a newer schema decode into today's columns; older tables gain new columns as nulls."""
    assert schema.known_versions() == [1, 2]
    rng = random.Random(4)
    record = random_record(rng) | {"tenant": "acme"}
    message = encode_record(record, schema_v2)
    assert decode_one(message, schema_v2)["tenant"] == "acme"
    table = decode_batch([message], schema_v2)
    assert "tenant" not in table.column_names and table.num_rows == 1
    assert table["event_id"][0].as_py() == record["event_id"]
    newer = arrow_schema(schema_v2)
    old_rows = decode_batch([encode_record(random_record(rng))], 1)
    upgraded = decode.conform(old_rows, newer)
    assert upgraded["tenant"].to_pylist() == [None] and upgraded["seq"] == old_rows["seq"]
