"""The native decoder (issue 11 item 5): the batch it makes equals the Polars path's, and it refuses what that path
refuses, for the same reasons.

CI installs the accelerator (`pip install ./native`): these tests fail, never skip, when it is missing."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
import secureml_audit_native
from test_codec import random_record, schema_v2  # noqa: F401 - schema_v2 is a fixture

from secureml.audit import accelerator, codec, schema
from secureml.audit.codec import canonical_bytes, encode_long, encode_record, seal
from secureml.audit.exceptions import AuditValidationError
from secureml.lake.rows import events_table
from secureml.stream import decode
from secureml.stream.decode import arrow_schema, decode_batch, decode_sealed

EVENT_TYPES = ["audit_started", "data_access", "data_transformation", "model_training", "model_inference",
               "compliance_check", "user_request", "function_call", "function_return", "error", "audit_closed",
               "custom_ünïcode_✓"]


def sealed(record: dict, version: int = schema.SCHEMA_VERSION) -> bytes:
    """The message a producer writes for ``record`` (its hash set by the seal)."""
    message, digest = seal(canonical_bytes(record | {"hash": ""}, version))
    assert message == encode_record(record | {"hash": digest}, version)
    return message


def records(seed: int, count: int) -> list[dict]:
    rng = random.Random(seed)
    return [random_record(rng) | {"event_type": EVENT_TYPES[i % len(EVENT_TYPES)], "schema_version": 1}
            for i in range(count)]


def both(messages: list[bytes], version: int = 1) -> tuple[tuple[pa.Table, dict[int, str]], ...]:
    """decode_sealed with the native decoder, then with the pure-Python path (Polars), in this process."""
    assert accelerator.native is secureml_audit_native
    native = decode_sealed(messages, version)
    accelerator.native = None
    try:
        python = decode_sealed(messages, version)
    finally:
        accelerator.native = secureml_audit_native
    return native, python


def test_native_batch_equals_polars_on_every_event_type_nulls_and_non_ascii() -> None:
    """Random records (every optional field null or set, non-ASCII, quotes, newlines, 62-bit longs, empty and long
    strings, arrays of 0-4 items) of every event type: the same table, types, nulls and values, in one chunk."""
    messages = [sealed(r) for r in records(11, 600)]
    (table, refused), (expected, python_refused) = both(messages)
    assert refused == python_refused == {}
    assert table.schema == expected.schema == arrow_schema()
    assert table.equals(expected)
    assert table.column("event_type").to_pylist() == [EVENT_TYPES[i % len(EVENT_TYPES)] for i in range(600)]
    assert table.column("user").null_count == expected.column("user").null_count > 0
    assert table.column("columns_accessed").null_count > 0 and table.column("result").null_count > 0


def test_extreme_values_decode_as_polars_decodes_them() -> None:
    """Limits of each type: the largest and smallest longs and ints, +-0.0 and huge doubles, empty strings and arrays,
    4-byte UTF-8, a NUL character, a string over 8 KiB (three-byte length)."""
    base = records(12, 1)[0]
    extremes = [
        base | {"seq": 2**63 - 1, "level": 2**31 - 1, "num_records": -(2**63), "producer_pid": 0,
                "confidence": -0.0, "execution_time": 1e308, "regulations": [], "columns_accessed": []},
        base | {"seq": -(2**63), "level": -(2**31), "num_records": None, "confidence": None, "result": False,
                "operation_name": "", "context": "x" * 9000, "user": "🚀\x00日本", "regulations": ["", "é" * 70]},
        base | {"timestamp": 0, "operation_start": 2**62, "result": True, "columns_accessed": None},
    ]
    (table, refused), (expected, _) = both([sealed(r) for r in extremes])
    assert refused == {} and table.equals(expected)
    assert table.column("seq").to_pylist() == [2**63 - 1, -(2**63), base["seq"]]
    assert table.column("user").to_pylist()[1] == "🚀\x00日本"


def forged(record: dict, name: str, raw: bytes) -> bytes:
    """A sealed message of ``record`` with field ``name``'s encoding replaced by ``raw`` (sealed, not an event)."""
    encoders = codec.field_encoders()
    parts = [raw if field == name else encode(record[field]) for field, encode in encoders[:-1]]
    return seal(b"".join(parts))[0]


def corrupt_and_foreign(good: list[bytes]) -> tuple[list[bytes], dict[int, str]]:
    """Good messages with bad ones among them, and the index -> kind ("seal" or "decode") of the bad ones."""
    flipped = bytearray(good[1])
    flipped[20] ^= 0x01
    forged_short = seal(good[2][:40])[0]  # sealed, but the fields stop half way
    forged_union = forged(records(13, 1)[0], "user", b"\x04")  # union index 2 of ["null", "string"]
    forged_boolean = forged(records(13, 1)[0], "result", b"\x02\x02")  # a boolean byte of 2
    forged_int = forged(records(13, 1)[0], "level", encode_long(2**31))  # beyond the 32 bits of an Avro int
    not_utf8 = seal(encode_long(1) + encode_long(3) + b"\xff\xfe\xfd")[0]
    leftover = seal(good[3][:-66] + b"\x00")[0]  # every field, then a byte too many before the hash
    bad = {
        1: ("seal", bytes(flipped)),
        3: ("seal", b""),
        4: ("seal", b"foreign: " + b"x" * 100),
        5: ("decode", forged_short),
        7: ("decode", not_utf8),
        8: ("seal", good[4][:-1]),
        9: ("decode", seal(encode_long(1) + encode_long(-5))[0]),  # a negative string length
        10: ("decode", leftover),
        11: ("decode", forged_union),
        12: ("decode", forged_boolean),
        13: ("decode", forged_int),
    }
    messages = list(good)
    for index, (_, message) in bad.items():
        messages[index] = message
    return messages, {index: kind for index, (kind, _) in bad.items()}


def test_corrupt_and_foreign_messages_are_refused_by_index_with_the_pure_paths_reasons() -> None:
    """Messages failing the seal or the decoding (cut short, not UTF-8, bytes left over) among good ones: both
    paths keep the same rows and give the same reason per index; the native one keeps nothing of a message
    that failed half way."""
    good = [sealed(r) for r in records(14, 14)]
    messages, kinds = corrupt_and_foreign(good)
    (table, refused), (expected, python_refused) = both(messages)
    assert sorted(refused) == sorted(kinds)
    for index, kind in kinds.items():
        if kind == "seal":
            assert refused[index] == codec.rejection(1, messages[index]) and "sealed" in refused[index]
        else:
            assert refused[index].startswith("Avro decoding failed: ")
    # Polars reads three kinds of invalid Avro leniently, storing what was not sealed (bytes left over after the
    # last field are ignored, a boolean byte 2 reads False, an int beyond 32 bits wraps; fastavro reads the last
    # two otherwise: True, 2**31); the native decoder refuses them. The only differences, on the stricter side.
    lenient = {10, 12, 13}
    assert {i: r for i, r in refused.items() if i not in lenient} == python_refused
    kept = [i for i in range(len(messages)) if i not in refused]
    assert table.equals(decode_batch([messages[i] for i in kept]))
    assert expected.num_rows == table.num_rows + len(lenient)
    assert table.column("event_id").to_pylist() == [records(14, 14)[i]["event_id"] for i in kept]


def test_events_table_hands_refused_messages_over_and_keeps_their_offsets_out() -> None:
    """events_table with ``refuse``: the refused messages' offsets are not in the table; without it, an error
    naming the call, the message and the rule."""
    good = [sealed(r) for r in records(15, 14)]
    messages, kinds = corrupt_and_foreign(good)
    offsets = list(range(100, 100 + len(messages)))
    refused: list[tuple[int, str]] = []
    table = events_table(["t/0"] * len(messages), offsets, [1] * len(messages), messages,
                         lambda index, reason: refused.append((index, reason)))
    assert [index for index, _ in refused] == sorted(kinds)
    assert table.column("source_offset").to_pylist() == [o for i, o in enumerate(offsets) if i not in kinds]
    with pytest.raises(AuditValidationError, match=r"events_table: invalid 'values\[1\]': must be a sealed.*101"):
        events_table(["t/0"] * len(messages), offsets, [1] * len(messages), messages)


def test_schema_versions_decode_natively_into_todays_columns(
        schema_v2: int, request: pytest.FixtureRequest) -> None:  # noqa: F811
    """A newer writer schema (an added optional field) and today's, mixed in one batch: the same rows as Polars,
    in the order given."""
    codec.known_versions_set.cache_clear()  # (read once per process: the fixture adds a version)
    request.addfinalizer(codec.known_versions_set.cache_clear)
    rng = random.Random(16)
    new = [sealed(random_record(rng) | {"tenant": "acmé" if i % 2 else None}, schema_v2) for i in range(30)]
    old = [sealed(r) for r in records(17, 30)]
    for version, messages in ((schema_v2, new), (1, old)):
        (table, refused), (expected, _) = both(messages, version)
        assert refused == {} and table.equals(expected)
    mixed = [m for pair in zip(new, old) for m in pair]
    versions = [v for _ in range(30) for v in (schema_v2, 1)]
    table = events_table(["s"] * 60, list(range(60)), versions, mixed)
    assert table.column("source_offset").to_pylist() == list(range(60))
    assert table.column("event_id").to_pylist() == [
        decode.decode_one(m, v)["event_id"] for m, v in zip(mixed, versions)]


def test_empty_batch_and_a_batch_of_only_refused_messages() -> None:
    """No messages, or none that is an event: an empty table of today's schema, and the reasons."""
    for messages in ([], [b"", b"\x80\x01" + b"0" * 64]):
        (table, refused), (expected, python_refused) = both(messages)
        assert table.num_rows == 0 and table.schema == arrow_schema() and table.equals(expected)
        assert refused == python_refused and sorted(refused) == list(range(len(messages)))


def test_bad_arguments_are_refused_naming_the_call() -> None:
    """A message that is not bytes, or a field kind the decoder does not know: an error naming decode_events."""
    with pytest.raises(ValueError, match="decode_events: messages must be bytes"):
        secureml_audit_native.decode_events(["text"], decode._native_fields(1), True)
    with pytest.raises(ValueError, match='decode_events: field "x" has unknown kind "map"'):
        secureml_audit_native.decode_events([], [("x", "map", False)], True)


def test_the_pure_path_decodes_the_same_rows_in_a_process_without_the_accelerator(tmp_path: Path) -> None:
    """SECUREML_AUDIT_NATIVE=0: decode_sealed runs without the native module and gives the rows and reasons the
    native decoder gives here (compared through a digest of the table's IPC bytes)."""
    good = [sealed(r) for r in records(18, 40)]
    messages, _kinds = corrupt_and_foreign(good)
    for index in (13, 12, 10):  # those the two paths judge differently (see above)
        del messages[index]
    (tmp_path / "messages.json").write_text(json.dumps([m.hex() for m in messages]))
    script = (
        "import hashlib, json, sys; import pyarrow as pa\n"
        "from secureml.audit import accelerator; assert accelerator.native is None\n"
        "from secureml.stream.decode import decode_sealed\n"
        "messages = [bytes.fromhex(m) for m in json.loads(open(sys.argv[1]).read())]\n"
        "table, refused = decode_sealed(messages)\n"
        "sink = pa.BufferOutputStream(); w = pa.ipc.new_stream(sink, table.schema)\n"
        "w.write_table(table.combine_chunks()); w.close()\n"
        "print(json.dumps([hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest(), refused]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "messages.json")], capture_output=True,
                          text=True, timeout=120, env={**os.environ, accelerator.NATIVE_ENV: "0"})
    assert done.returncode == 0, done.stderr
    digest, python_refused = json.loads(done.stdout)
    table, refused = decode_sealed(messages)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table.combine_chunks())
    assert {int(i): r for i, r in python_refused.items()} == refused and len(refused) == 8
    assert hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest() == digest

