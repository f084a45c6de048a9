"""Event hashes recomputed column-wise from lake rows: the codec's Avro encoding, vectorised.

With the native accelerator (``native.Canonical``) each row is encoded and hashed in Rust, off
the GIL, in one pass over the columns (bench/RESULTS.md, wave 3); what follows is the
pure-Python path, which gives the same bytes and the same judgement.

``codec.canonical_bytes`` encodes one record with a Python call per field (~15 µs an event,
with the row made a dict); here the fields of a whole record batch are encoded with NumPy and
Arrow and joined in one pass (~2 µs an event), so only the SHA-256 itself runs per row. The
output is byte-identical to the codec (the tests compare them on every event type).

A piece of the encoding is either *small*, a NumPy byte matrix with the bytes used per row
(varints, union markers, doubles, booleans: at most 10 bytes), or an Arrow array of string
bytes. Each run of small pieces becomes one Arrow array, or one scalar when it is the same on
every row, before the join, whose cost grows with the number of arrays joined. Rows are
encoded in groups of one event type, where most payload fields are null throughout, so most
runs are constants.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import cache
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from secureml.audit.accelerator import native
from secureml.audit.schema import load_schema

Small: TypeAlias = tuple[np.ndarray, np.ndarray]  # (rows x width uint8 matrix, bytes used per row)
Piece: TypeAlias = Small | pa.Array
Encoder: TypeAlias = Callable[[pa.Array, np.ndarray], list[Piece]]


@cache
def _nothing() -> pa.Scalar:
    """The empty binary scalar (made on first use: building it imports pandas, which is slow)."""
    return pa.scalar(b"", pa.large_binary())


def _varints(values: np.ndarray, present: np.ndarray) -> Small:
    """Avro zigzag varints of int64 values; rows not present get no bytes."""
    signed = values.astype(np.int64, copy=False)
    zigzag = ((signed << 1) ^ (signed >> 63)).view(np.uint64)
    lengths = np.ones(len(zigzag), dtype=np.int64)
    for k in range(1, 10):
        longer = zigzag >= np.uint64(1 << (7 * k))
        if not longer.any():
            break
        lengths += longer
    width = int(lengths.max(initial=1))
    matrix = np.empty((len(zigzag), width), dtype=np.uint8)
    for k in range(width):
        matrix[:, k] = ((zigzag >> np.uint64(7 * k)).astype(np.uint8) & 0x7F) | ((lengths - 1 > k) << 7)
    return matrix, np.where(present, lengths, 0)


def _byte(value: np.ndarray | int, present: np.ndarray) -> Small:
    """One byte per present row."""
    return np.broadcast_to(np.asarray(value, dtype=np.uint8), present.shape).reshape(-1, 1), present.astype(np.int64)


def _strings(column: pa.Array, present: np.ndarray) -> list[Piece]:
    """Length varint and UTF-8 bytes of every present string."""
    data = column.cast(pa.large_binary()).fill_null(_nothing())
    return [_varints(pc.binary_length(data).to_numpy(zero_copy_only=False), present), data]


def _longs(column: pa.Array, present: np.ndarray) -> list[Piece]:
    return [_varints(column.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False), present)]


def _doubles(column: pa.Array, present: np.ndarray) -> list[Piece]:
    values = column.cast(pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False).astype("<f8")
    return [(values.view(np.uint8).reshape(-1, 8), np.where(present, 8, 0))]


def _booleans(column: pa.Array, present: np.ndarray) -> list[Piece]:
    return [_byte(column.fill_null(False).to_numpy(zero_copy_only=False), present)]


def _string_arrays(column: pa.Array, present: np.ndarray) -> list[Piece]:
    """Avro arrays of strings: count, items, zero terminator (an empty array is the terminator)."""
    items = column.flatten()
    encoded_items = _join(_strings(items, np.ones(len(items), dtype=bool)), len(items))
    offsets = pc.subtract(column.offsets, column.offsets[0]).cast(pa.int64())
    joined = pc.binary_join(pa.LargeListArray.from_arrays(offsets, encoded_items), _nothing()).fill_null(_nothing())
    counts = pc.list_value_length(column).fill_null(0).to_numpy(zero_copy_only=False)
    return [_varints(counts, present & (counts > 0)), joined, _byte(0, present)]


_PRIMITIVE: dict[str, Encoder] = {
    "string": _strings,
    "long": _longs,
    "int": _longs,
    "double": _doubles,
    "boolean": _booleans,
}


def _encoder(avro_type: Any) -> tuple[bool, Encoder]:
    """(optional?, encoder of the non-null values) for a schema field type."""
    if isinstance(avro_type, list):  # ["null", T], the only union the schema uses
        return True, _encoder(avro_type[1])[1]
    if isinstance(avro_type, dict):
        if avro_type["type"] == "array":
            return False, _string_arrays
        return False, _PRIMITIVE[avro_type["type"]]
    return False, _PRIMITIVE[avro_type]


@cache
def _plan(version: int) -> tuple[tuple[str, bool, Encoder], ...]:
    fields = load_schema(version)["fields"]
    if fields[-1]["name"] != "hash":
        raise ValueError(f"schema v{version}: 'hash' must be the last field")
    return tuple((f["name"], *_encoder(f["type"])) for f in fields[:-1])


def _kind(avro_type: Any) -> str:
    """The native encoder's name for the non-null values of a schema field type."""
    if isinstance(avro_type, list):
        return _kind(avro_type[1])
    name = avro_type["type"] if isinstance(avro_type, dict) else avro_type
    return {"array": "strings", "int": "long"}.get(name, name)


@cache
def _native_plan(version: int) -> Any:
    """The native encoder of a schema version's fields (all but ``hash``, as ``_plan``)."""
    fields = load_schema(version)["fields"][:-1]
    _plan(version)  # the same check that ``hash`` is last
    return native.Canonical([(f["name"], _kind(f["type"]), isinstance(f["type"], list)) for f in fields])


def _run(smalls: list[Small]) -> pa.Array | pa.Scalar:
    """The bytes a run of small pieces uses in each row, piece after piece."""
    matrix = np.hstack([m for m, _ in smalls])
    used = np.hstack([np.arange(m.shape[1]) < n[:, None] for m, n in smalls])
    lengths = np.sum([n for _, n in smalls], axis=0)
    data = matrix[used]  # row-major: each row's used bytes, in order
    if len(lengths) and (lengths == lengths[0]).all():
        rows = data.reshape(len(lengths), int(lengths[0]))
        if (rows == rows[0]).all():
            return pa.scalar(rows[0].tobytes(), pa.large_binary())
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return pa.Array.from_buffers(pa.large_binary(), len(lengths), [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _join(pieces: list[Piece], rows: int) -> pa.Array:
    """Row-wise concatenation of the pieces."""
    arrays: list[pa.Array | pa.Scalar] = []
    run: list[Small] = []
    for piece in pieces:
        if isinstance(piece, tuple):
            run.append(piece)
            continue
        if run:
            arrays.append(_run(run))
            run = []
        arrays.append(piece)
    if run:
        arrays.append(_run(run))
    if len(arrays) == 1:
        only = arrays[0]
        return only if isinstance(only, pa.Array) else pa.repeat(only, rows)
    return pc.binary_join_element_wise(*arrays, _nothing())


def _encode(batch: pa.RecordBatch, version: int) -> pa.Array:
    """Canonical bytes of rows of one event type."""
    pieces: list[Piece] = []
    everywhere = np.ones(batch.num_rows, dtype=bool)
    for name, optional, encode in _plan(version):
        column = batch.column(name)
        if pa.types.is_timestamp(column.type):
            column = column.cast(pa.int64())
        present = everywhere
        if optional:
            present = column.is_valid().to_numpy(zero_copy_only=False)
            pieces.append(_byte(np.where(present, 2, 0), everywhere))
        if column.null_count < len(column):
            pieces.extend(encode(column, present))
    return _join(pieces, batch.num_rows)


def canonical_column(batch: pa.RecordBatch, version: int) -> pa.Array:
    """Canonical bytes (every field but ``hash``, Avro-encoded per schema ``version``) of each row.

    A row with a null where the schema allows none (a tampered row, never intact) may encode
    differently on the two paths; every other row encodes byte for byte as the codec.
    """
    if native is not None:
        return _native_plan(version).encode(batch)
    if batch.num_rows == 0:
        return pa.array([], pa.large_binary())
    order = pc.sort_indices(batch.column("event_type"))
    grouped = batch.take(order)
    types = grouped.column("event_type").to_numpy(zero_copy_only=False)
    bounds = [0, *(np.flatnonzero(types[1:] != types[:-1]) + 1), len(types)]
    parts = [_encode(grouped.slice(start, end - start), version) for start, end in zip(bounds, bounds[1:])]
    back = np.empty(len(order), dtype=np.int64)
    back[order.to_numpy()] = np.arange(len(order))
    return pa.concat_arrays(parts).take(pa.array(back))


def _buffers(column: pa.Array) -> tuple[list[int], memoryview]:
    """A large binary array's offsets (one more than its rows) and its data."""
    offsets = np.frombuffer(column.buffers()[1], dtype=np.int64)[column.offset : column.offset + len(column) + 1]
    return offsets.tolist(), memoryview(column.buffers()[2] or b"")


def hashes_match(batch: pa.RecordBatch, version: int) -> np.ndarray:
    """Whether each row's stored ``hash`` is the SHA-256 hex digest of its canonical bytes (False where null).

    The digests are hashed from slices of the canonical bytes' buffer and compared as one
    block of hex text with the stored hashes: no Python object per row but the digest.
    """
    if native is not None:
        return _native_plan(version).matches(batch).to_numpy(zero_copy_only=False)
    if batch.num_rows == 0:
        return np.zeros(0, dtype=bool)
    sha256 = hashlib.sha256
    starts, data = _buffers(canonical_column(batch, version))
    digests = b"".join([sha256(data[a:b]).digest() for a, b in zip(starts, starts[1:])]).hex()
    stored = batch.column("hash").cast(pa.large_binary())
    bounds, text = _buffers(stored)
    if stored.null_count == 0 and bounds[-1] - bounds[0] == 64 * len(stored) and \
            (np.diff(np.asarray(bounds)) == 64).all():
        held = np.frombuffer(text, dtype=np.uint8)[bounds[0] : bounds[-1]].reshape(-1, 64)
        return (held == np.frombuffer(digests.encode(), dtype=np.uint8).reshape(-1, 64)).all(axis=1)
    recomputed = pa.array([digests[i : i + 64] for i in range(0, len(digests), 64)], pa.large_string())
    return pc.equal(recomputed, batch.column("hash")).fill_null(False).to_numpy(zero_copy_only=False)
