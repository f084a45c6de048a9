"""Avro binary encoding of audit events, byte-identical to fastavro, specialised for speed.

The event's ``hash`` is the last field of the record, so the message is
``prefix + encode_string(sha256(prefix).hexdigest())``: the canonical bytes that the hash
covers are exactly the Avro encoding of every other field, recomputable from a Parquet row.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

from secureml.audit.schema import SCHEMA_VERSION, known_versions, load_schema

Encoder = Callable[[Any], bytes]

_SMALL = [bytes([i]) for i in range(128)]
_HASH_MARK = b"\x80\x01"  # zigzag varint of 64, the length of a SHA-256 hex digest
_HASH_TAIL = len(_HASH_MARK) + 64
_pack_double = struct.Struct("<d").pack


def encode_long(n: int) -> bytes:
    """Zigzag varint of an Avro int or long."""
    n = (n << 1) ^ (n >> 63)
    if n < 128:
        return _SMALL[n]
    if n < 1 << 21:  # seq, lengths: two or three groups, unrolled (the loop below costs ~0.5 us)
        if n < 1 << 14:
            return bytes((n & 0x7F | 0x80, n >> 7))
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14))
    if 1 << 49 <= n < 1 << 56:  # microsecond timestamps: eight groups, unrolled
        return bytes((
            n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14 & 0x7F | 0x80, n >> 21 & 0x7F | 0x80,
            n >> 28 & 0x7F | 0x80, n >> 35 & 0x7F | 0x80, n >> 42 & 0x7F | 0x80, n >> 49,
        ))
    out = bytearray()
    while n > 127:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode_string(s: str) -> bytes:
    """Avro string: length, then UTF-8 bytes."""
    b = s.encode()
    n = len(b)
    if n < 64:
        return _SMALL[n << 1] + b
    if n < 8192:  # two-byte length (an encrypted value, a JSON dict) inline: a call less than encode_long
        return bytes((n << 1 & 0x7F | 0x80, n >> 6)) + b
    return encode_long(n) + b


def encode_string_array(items: Sequence[str]) -> bytes:
    """Avro array of strings: one block, then the zero terminator."""
    if not items:
        return b"\x00"
    return encode_long(len(items)) + b"".join(encode_string(s) for s in items) + b"\x00"


def _encode_boolean(value: bool) -> bytes:
    return b"\x01" if value else b"\x00"


_PRIMITIVE: dict[str, Encoder] = {
    "string": encode_string,
    "long": encode_long,
    "int": encode_long,
    "double": _pack_double,
    "boolean": _encode_boolean,
}


def _encoder_for(avro_type: Any) -> Encoder:
    if isinstance(avro_type, list):  # ["null", T]: index 0 = null, 1 = T
        if len(avro_type) != 2 or avro_type[0] != "null":
            raise TypeError(f"unsupported union {avro_type!r}: only [null, T] is used")
        inner = _encoder_for(avro_type[1])

        def optional(value: Any) -> bytes:
            return b"\x00" if value is None else b"\x02" + inner(value)

        optional.inner = inner  # type: ignore[attr-defined]  # lets PayloadPlan inline the union
        return optional
    if isinstance(avro_type, dict):
        if avro_type["type"] == "array" and avro_type["items"] == "string":
            return encode_string_array
        return _encoder_for(avro_type["type"])
    return _PRIMITIVE[avro_type]


@cache
def field_encoders(version: int = SCHEMA_VERSION) -> tuple[tuple[str, Encoder], ...]:
    """(name, encoder) for every field of the schema, in order."""
    return tuple((f["name"], _encoder_for(f["type"])) for f in load_schema(version)["fields"])


def canonical_bytes(record: dict[str, Any], version: int = SCHEMA_VERSION) -> bytes:
    """Avro encoding of every field but ``hash``: what the event's hash covers.

    Timestamps must be given as integer microseconds since the epoch.
    """
    encoders = field_encoders(version)
    return b"".join(encode(record[name]) for name, encode in encoders[:-1])


def event_hash(prefix: bytes) -> str:
    """SHA-256 hex digest of an event's canonical bytes."""
    return hashlib.sha256(prefix).hexdigest()


def seal(prefix: bytes) -> tuple[bytes, str]:
    """The complete message for canonical bytes, and its hash."""
    digest = hashlib.sha256(prefix).hexdigest()
    return prefix + _HASH_MARK + digest.encode(), digest


def encode_record(record: dict[str, Any], version: int = SCHEMA_VERSION) -> bytes:
    """Full Avro message of a record whose ``hash`` is already set."""
    return canonical_bytes(record, version) + encode_string(record["hash"])


def is_sealed(message: bytes) -> bool:
    """True when the message ends in the SHA-256 of everything before it (cheap integrity check)."""
    if len(message) <= _HASH_TAIL or message[-_HASH_TAIL:-64] != _HASH_MARK:
        return False
    return hashlib.sha256(message[:-_HASH_TAIL]).hexdigest().encode() == message[-64:]


def rejection(version: int | None, value: bytes | None) -> str | None:
    """Why a stored message cannot be read as an event, or None when it is a sealed event of a known schema."""
    if version not in known_versions_set():
        return f"unknown or missing schema version {version!r} (known: {sorted(known_versions_set())})"
    if not value or not is_sealed(value):
        return "not a sealed audit event: the trailing SHA-256 does not match the bytes (corrupt or foreign)"
    return None


@cache
def known_versions_set() -> frozenset[int]:
    """The schema versions this library reads."""
    return frozenset(known_versions())


class PayloadPlan:
    """Encodes the optional payload fields of one event type, with constant nulls for the rest.

    The encoder is generated once per event type: one expression that concatenates constant
    null runs and the encoders of the fields the type carries.
    """

    __slots__ = ("names", "encode", "layout", "trailing_nulls")

    def __init__(self, names: Sequence[str], payload_fields: Sequence[tuple[str, Encoder]]) -> None:
        unknown = set(names) - {n for n, _ in payload_fields}
        if unknown:
            raise KeyError(f"not payload fields of the schema: {sorted(unknown)}")
        self.names = tuple(names)
        parts: list[str] = []
        scope: dict[str, Any] = {}
        # (null fields before it, name) of every field the type carries, in schema order, then the nulls after:
        # the layout the accelerator's EventChain encodes a model_inference by.
        self.layout: tuple[tuple[int, str], ...] = ()
        nulls = 0
        for name, encode in payload_fields:
            if name in names:
                self.layout += ((nulls, name),)
                if nulls:
                    parts.append(repr(b"\x00" * nulls))
                    nulls = 0
                inner = getattr(encode, "inner", None)
                if inner is None:
                    scope[f"e_{name}"] = encode
                    parts.append(f"e_{name}(get({name!r}))")
                else:  # inline the [null, T] union: one call less per field
                    scope[f"e_{name}"] = inner
                    parts.append(f"(b'\\x02' + e_{name}(v_{name}) if (v_{name} := get({name!r})) is not None "
                                 "else b'\\x00')")
            else:
                nulls += 1
        if nulls:
            parts.append(repr(b"\x00" * nulls))
        self.trailing_nulls = nulls
        source = "def encode(values):\n    get = values.get\n    return " + (" + ".join(parts) or "b''") + "\n"
        exec(source, scope)  # noqa: S102 - generated from the schema's field names only
        self.encode: Callable[[dict[str, Any]], bytes] = scope["encode"]
