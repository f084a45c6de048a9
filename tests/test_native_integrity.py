"""The native integrity hashing (issue 11): canonical bytes, event hashes judged, Merkle leaves and frontiers.

Each native step must give what its pure-Python path gives, byte for byte: the canonical bytes of lake
rows (which are the codec's), the judgement of every stored hash, the leaf hashes and frontiers, so
the roots a checkpoint signs, and what ``verify`` finds in a tampered lake, run in a subprocess with
the accelerator switched off. CI installs the accelerator: these tests fail, never skip, without it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import secureml_audit_native
from support.integrity import (  # noqa: F401 - signing_key_fixture is autouse
    Keys,
    LakeRows,
    copy_lake,
    event_hash,
    log_function_calls,
    log_operations,
    materialize,
    signing_key_fixture,
)

from conftest import Harness
from secureml.audit.accelerator import NATIVE_ENV
from secureml.audit.codec import canonical_bytes
from secureml.audit.schema import load_schema
from secureml.integrity import LakeCheckpointer, canonical, merkle, verify
from secureml.integrity.canonical import canonical_column, hashes_match
from secureml.integrity.merkle import MerkleTree, extend_frontier, leaf_block, leaf_hashes, root_of_frontier
from secureml.integrity.scan import intact_rows
from secureml.lake.table import Lake
from secureml.materializer.runner import Materializer
from secureml.stream.decode import arrow_schema
from secureml.stream.sources import EmbeddedSource

TEXTS = ["", "plain", "é ß 日本語", "emoji 😀👍🏽", "".join(chr(c) for c in range(32)), "\x7f\x80\u2028\u2029",
         'quote " back \\', "x" * 5000]
LONGS = [0, 1, -1, 63, 64, -65, 2**31, -(2**31) - 1, 2**53 + 1, 2**63 - 1, -(2**63)]
DOUBLES = [0.0, -0.0, 0.5, -1e-310, 1e308, float("inf"), float("-inf"), float("nan")]


def _value(avro_type: Any, rng: random.Random) -> Any:
    """A random value of a schema field type (None often, where the type allows it)."""
    if isinstance(avro_type, list):
        return None if rng.random() < 0.35 else _value(avro_type[1], rng)
    if isinstance(avro_type, dict):
        if avro_type["type"] == "array":
            return [rng.choice(TEXTS) for _ in range(rng.choice([0, 0, 1, 3, 70]))]
        avro_type = avro_type["type"]
    return {"string": lambda: rng.choice(TEXTS), "long": lambda: rng.choice(LONGS),
            "int": lambda: rng.choice([0, -1, 1, 2**31 - 1, -(2**31)]), "double": lambda: rng.choice(DOUBLES),
            "boolean": lambda: rng.random() < 0.5}[avro_type]()


def _records(count: int, seed: int) -> list[dict[str, Any]]:
    """Random records of every field with their true hashes (timestamps as microseconds)."""
    rng = random.Random(seed)
    records = []
    for _ in range(count):
        record = {f["name"]: _value(f["type"], rng) for f in load_schema(1)["fields"][:-1]}
        record["hash"] = hashlib.sha256(canonical_bytes(record)).hexdigest()
        records.append(record)
    return records


def _batch(records: list[dict[str, Any]]) -> pa.RecordBatch:
    schema = pa.schema([f.with_nullable(True) for f in arrow_schema()])
    return pa.RecordBatch.from_pylist(records, schema=schema)


def _python(monkeypatch: pytest.MonkeyPatch) -> None:
    """Switch the integrity modules to their pure-Python paths."""
    monkeypatch.setattr(canonical, "native", None)
    monkeypatch.setattr(merkle, "native", None)


def test_the_accelerator_is_in_use() -> None:
    """Installed and not switched off, the integrity modules call it."""
    assert canonical.native is secureml_audit_native
    assert merkle.native is secureml_audit_native


def test_canonical_bytes_of_random_tricky_rows_equal_the_codec_and_the_python_path(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Non-ASCII and control characters, empty and long strings and arrays, nulls, int64 extremes, NaN and
    infinities, -0.0: the native bytes are the codec's and the pure-Python path's, in batches and slices."""
    records = _records(400, 7)
    batch = _batch(records)
    expected = [canonical_bytes(r) for r in records]
    assert canonical_column(batch, 1).to_pylist() == expected
    assert canonical_column(batch.slice(123, 77), 1).to_pylist() == expected[123:200]  # offsets inside buffers
    assert canonical_column(batch.drop_columns(["hash"]), 1).to_pylist() == expected  # encoding needs no hash
    assert hashes_match(batch, 1).all()
    native_empty = canonical_column(batch.slice(0, 0), 1).to_pylist()
    with monkeypatch.context() as patch:
        _python(patch)
        assert canonical_column(batch, 1).to_pylist() == expected
        assert hashes_match(batch, 1).all()
        assert canonical_column(batch.slice(0, 0), 1).to_pylist() == native_empty == []


def test_tampered_hashes_and_values_are_judged_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    """A changed value, a changed, uppercase, shortened or null hash, a null where the schema has none: each
    row is judged by the native path as by the pure-Python one, and only the untouched rows are intact."""
    records = _records(60, 8)
    rng = random.Random(9)
    touched = set(rng.sample(range(len(records)), 30))
    for i in sorted(touched):
        record = records[i]
        how = i % 6
        if how == 0:
            record["seq"] = record["seq"] + 1 if record["seq"] < 2**63 - 1 else 0
        elif how == 1:
            record["hash"] = record["hash"].upper()
        elif how == 2:
            record["hash"] = record["hash"][:63]
        elif how == 3:
            record["hash"] = None
        elif how == 4:
            record["operation_name"] = None  # a null in a required column
        else:
            record["regulations"] = [*(record["regulations"] or []), "forged"]
    batch = _batch(records)
    native = intact_rows(batch).to_numpy(zero_copy_only=False)
    with monkeypatch.context() as patch:
        _python(patch)
        python = intact_rows(batch).to_numpy(zero_copy_only=False)
    assert native.tolist() == python.tolist()
    assert np.flatnonzero(~native).tolist() == sorted(touched)


def test_a_column_of_the_wrong_type_is_refused_naming_it() -> None:
    """A column whose Arrow type cannot hold the schema's values is an error naming the column and both types."""
    batch = _batch(_records(3, 10))
    wrong = batch.set_column(batch.schema.get_field_index("seq"), "seq", pa.array(["0", "1", "2"]))
    with pytest.raises(ValueError, match=r'Canonical: column "seq" is Utf8, which cannot hold the schema\'s long'):
        hashes_match(wrong, 1)
    with pytest.raises(ValueError, match=r'Canonical: the batch has no column "hash"'):
        hashes_match(batch.drop_columns(["hash"]), 1)


def test_leaf_blocks_and_frontiers_equal_the_python_path_and_the_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    """Leaf hashes of any strings (hex, empty, non-ASCII) and frontiers grown in random chunks from any size
    are the pure-Python path's and the whole tree's, in string and large_string columns, chunked or not."""
    rng = random.Random(11)
    texts = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(333)] + ["", "é", "0" * 64, "F" * 64]
    rng.shuffle(texts)
    leaves = leaf_hashes(texts)
    block = leaf_block(pa.array(texts, pa.large_string()))
    assert block == b"".join(leaves)
    assert leaf_block(pa.chunked_array([pa.array(texts[:100]), pa.array(texts[100:])])) == block
    assert leaf_block(pa.array(texts).slice(17, 40)) == b"".join(leaves[17:57])
    tree = MerkleTree(leaves)
    for start in [0, 1, 2, 3, 64, 100, 255, 256, 300]:
        frontier, done, python = tree.frontier(start), start, tree.frontier(start)
        while done < len(leaves):
            chunk = block[done * 32 : (done + rng.randint(1, 90)) * 32]
            frontier = extend_frontier(frontier, done, chunk)
            with monkeypatch.context() as patch:
                _python(patch)
                python = extend_frontier(python, done, chunk)
            done += len(chunk) // 32
            assert frontier == python == tree.frontier(done)
        assert root_of_frontier(frontier) == tree.root(len(leaves))
    with monkeypatch.context() as patch:
        _python(patch)
        assert leaf_block(pa.array(texts, pa.large_string())) == block


def test_bad_leaf_input_is_refused() -> None:
    """A null event hash, a block that is not whole 32-byte hashes, a frontier of the wrong size: errors."""
    with pytest.raises(ValueError, match="leaf_hashes: an event hash is null"):
        leaf_block(pa.array(["a" * 64, None]))
    with pytest.raises(ValueError, match="extend_frontier: leaves must be 32-byte hashes end to end, got 33"):
        extend_frontier([], 0, b"x" * 33)
    with pytest.raises(ValueError, match="extend_frontier: a tree of 3 leaves has 2 perfect subtrees"):
        extend_frontier([b"x" * 32], 3, b"y" * 32)


VERIFY_SCRIPT = """
import json, sys
from secureml.audit import accelerator
from secureml.integrity import LakeCheckpointer, verify
from secureml.lake.table import Lake
from secureml.materializer.runner import Materializer
from secureml.stream.sources import EmbeddedSource
from pathlib import Path
assert accelerator.native is None
log_dir, key, public, checkpoint_dir = sys.argv[1:5]
if checkpoint_dir != "-":
    LakeCheckpointer(Path(key), create_key=False).checkpoint(Lake(Path(checkpoint_dir)))
result = verify(log_dir, public_key=public)
print(json.dumps([result.ok, result.events, sorted((f.kind, f.operation_id or "", list(f.seqs)) for f in
                                                     result.all_findings())]))
"""


def _findings(result: Any) -> list[Any]:
    return [result.ok, result.events, sorted([f.kind, f.operation_id or "", list(f.seqs)]
                                             for f in result.all_findings())]


def _without_native(log_dir: Path, keys: Keys, checkpoint: Path | None = None) -> list[Any]:
    """``verify`` (after a checkpoint of ``checkpoint`` when given) in a subprocess with the accelerator off."""
    done = subprocess.run(
        [sys.executable, "-c", VERIFY_SCRIPT, str(log_dir), str(keys.private), str(keys.public),
         str(checkpoint or "-")], env={**os.environ, NATIVE_ENV: "0"}, capture_output=True, text=True,
        timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_checkpoints_and_verify_find_the_same_with_and_without_the_accelerator(
        embedded: Harness, signing_key: Keys, tmp_path: Path) -> None:
    """A lake of every event type, checkpointed with the accelerator and (a copy) without it, signs the same
    roots; tampered copies (changed, rehashed, forged, nulled rows) get the same findings both ways."""
    rng = random.Random(12)
    for _ in range(2):
        log_operations(embedded, rng, 5, 12)
        log_function_calls(embedded, 2)
        materialize(embedded)
    log_operations(embedded, rng, 3, 9)
    Materializer(Lake(embedded.log_dir), EmbeddedSource(embedded.log_dir)).run(once=True)  # not checkpointed yet
    python_copy = copy_lake(embedded.log_dir, tmp_path / "python")
    LakeCheckpointer(signing_key.private, create_key=False).checkpoint(Lake(embedded.log_dir))
    assert _without_native(python_copy, signing_key, python_copy)[0]
    native_json = sorted((embedded.log_dir / "lake" / "_checkpoints").glob("*.json"))
    python_json = sorted((python_copy / "lake" / "_checkpoints").glob("*.json"))
    assert len(native_json) == len(python_json) == 3
    signed = [{k: v for k, v in json.loads(p.read_text()).items() if k in ("sources", "log", "operations")}
              for p in (native_json[-1], python_json[-1])]
    assert signed[0] == signed[1]
    clean = verify(embedded.log_dir, public_key=signing_key.public)
    assert clean.ok and _findings(clean) == _without_native(embedded.log_dir, signing_key)

    tampers = ["value", "rehashed", "null", "forged_hash"]
    for number, how in enumerate(tampers):
        copy = copy_lake(embedded.log_dir, tmp_path / f"tampered-{number}")
        rows = LakeRows.load(copy)
        rows.schemas = {path: pa.schema([f.with_nullable(True) for f in s]) for path, s in rows.schemas.items()}
        _path, row = rng.choice(list(rows.all()))
        if how == "value":
            row["operation_name"] += " (edited)"
        elif how == "rehashed":
            row["operation_name"] += " (edited)"
            row["hash"] = event_hash(row)
        elif how == "null":
            row["operation_name"] = None
        else:
            row["hash"] = "0" * 64
        rows.save()
        result = verify(copy, public_key=signing_key.public)
        assert not result.ok
        assert any(f.operation_id == row["operation_id"] for f in result.errors), how
        assert _findings(result) == _without_native(copy, signing_key), how
