"""The integrity layer's parts on their own: canonical bytes, Merkle trees, keys, checkpoint records."""

from __future__ import annotations

import hashlib
import random
import stat
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.integrity import (  # noqa: F401 - signing_key_fixture is autouse
    EVENT_FIELDS,
    log_function_calls,
    log_operations,
    materialize,
    micros,
    signing_key_fixture,
)

from conftest import Harness
from secureml.audit.codec import canonical_bytes
from secureml.audit.config import resolve_config
from secureml.integrity import SigningKeyError, checkpointer_for
from secureml.integrity.canonical import canonical_column
from secureml.integrity.checkpoints import Checkpoint, LogTree, OperationHead, SourceCoverage
from secureml.integrity.keys import (
    generate_key,
    key_id,
    load_public_key,
    load_signing_key,
    public_key_path,
    sign,
    signature_valid,
)
from secureml.integrity.logtree import consistency_proof, fold
from secureml.integrity.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    consistency_ranges,
    extend_frontier,
    leaf_hashes,
    node_hash,
    root_from_audit_path,
    root_of_frontier,
)


def _reference_root(leaves: list[bytes]) -> bytes:
    """RFC 6962 section 2.1 MTH, written as the RFC states it."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    split = 1
    while split * 2 < len(leaves):
        split *= 2
    return node_hash(_reference_root(leaves[:split]), _reference_root(leaves[split:]))


def test_canonical_column_is_byte_identical_to_the_codec(embedded: Harness, tmp_path: Path) -> None:
    """Column-wise canonical bytes equal codec.canonical_bytes for every event type and odd values."""
    rng = random.Random(5)
    log_operations(embedded, rng, operations=12, events=40)
    log_function_calls(embedded, 5)
    materialize(embedded)
    table = pa.concat_tables(pq.read_table(p) for p in (embedded.log_dir / "lake" / "events").glob("*/*.parquet"))
    assert len(set(table.column("event_type").to_pylist())) >= 12
    encoded = pa.concat_arrays([canonical_column(b, 1) for b in table.to_batches(max_chunksize=97)]).to_pylist()
    for row, got in zip(table.to_pylist(), encoded):
        record = {name: row[name] for name in EVENT_FIELDS}
        record["timestamp"], record["operation_start"] = micros(row["timestamp"]), micros(row["operation_start"])
        assert got == canonical_bytes(record)
        assert hashlib.sha256(got).hexdigest() == row["hash"]


def test_merkle_roots_frontiers_and_paths_follow_rfc_6962() -> None:
    """Roots of every prefix, incremental frontiers and audit paths agree with the RFC's definition."""
    leaves = leaf_hashes(hashlib.sha256(str(i).encode()).hexdigest() for i in range(67))
    tree = MerkleTree(leaves)
    for size in range(1, len(leaves) + 1):
        root = _reference_root(leaves[:size])
        assert tree.root(size) == root
        half = size // 2
        assert root_of_frontier(extend_frontier(tree.frontier(half), half, b"".join(leaves[half:size]))) == root
        for index in range(size):
            path = tree.audit_path(index, size)
            assert root_from_audit_path(leaves[index], index, size, path) == root
            if size > 1:
                assert root_from_audit_path(leaves[(index + 1) % size], index, size, path) != root


def test_audit_path_of_another_size_or_index_fails() -> None:
    """A path checked at another index, for a larger tree, or outside the tree gives no matching root."""
    leaves = leaf_hashes(hashlib.sha256(str(i).encode()).hexdigest() for i in range(10))
    tree = MerkleTree(leaves)
    path = tree.audit_path(3, 10)
    assert root_from_audit_path(leaves[3], 2, 10, path) != tree.root(10)
    assert root_from_audit_path(leaves[3], 3, 20, path) is None
    assert root_from_audit_path(leaves[3], 10, 10, path) is None
    with pytest.raises(IndexError):
        tree.audit_path(10, 10)


def test_keygen_writes_an_owner_only_private_key_and_its_public_key(tmp_path: Path) -> None:
    """The private key is 0600 in a 0700 directory; the public key beside it verifies its signatures."""
    path = tmp_path / "operator" / "signing_key.pem"
    key = generate_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    public = load_public_key(public_key_path(path))
    assert key_id(public) == key_id(load_signing_key(path).public_key())
    assert signature_valid(public, b"message", sign(key, b"message"))
    assert not signature_valid(public, b"other", sign(key, b"message"))


def test_keygen_refuses_to_replace_a_key(tmp_path: Path) -> None:
    """An existing key is kept unless replacing it is asked for."""
    path = tmp_path / "signing_key.pem"
    first = generate_key(path)
    with pytest.raises(SigningKeyError, match="--force"):
        generate_key(path)
    assert key_id(generate_key(path, overwrite=True).public_key()) != key_id(first.public_key())


def test_a_private_key_others_can_read_is_refused(tmp_path: Path) -> None:
    """A signing key with group or other permissions is not used, and the message says how to fix it."""
    path = tmp_path / "signing_key.pem"
    generate_key(path)
    path.chmod(0o640)
    with pytest.raises(SigningKeyError, match="chmod 600"):
        load_signing_key(path)


def test_a_signing_key_inside_the_log_dir_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checkpointer will not sign with a key that lives in the audit log directory."""
    monkeypatch.setenv("SECUREML_AUDIT_SIGNING_KEY", str(tmp_path / "logs" / "key.pem"))
    with pytest.raises(SigningKeyError, match="inside the audit log directory"):
        checkpointer_for(resolve_config(log_dir=tmp_path / "logs", bootstrap_servers=""))


def test_checkpoint_record_round_trips_and_binds_its_operations(tmp_path: Path) -> None:
    """A stored record parses back equal; its operations are bound to the signed body by their digest."""
    key = generate_key(tmp_path / "k.pem")
    checkpoint = Checkpoint.new(
        3, "2026-01-01T00:00:00+00:00", key_id(key.public_key()),
        {"log/a.seg": SourceCoverage(5, 400, "ab" * 32, ("cd" * 32,))},
        {"op-1": OperationHead(4, "ef" * 32, True)}, "12" * 32,
    )
    signed = Checkpoint.from_dict(checkpoint.to_dict())
    assert signed == checkpoint and signed.operations_intact()
    altered = Checkpoint.from_dict({**checkpoint.to_dict(),
                                    "operations": {"op-1": {"last_seq": 9, "head_hash": "ef" * 32, "closed": True}}})
    assert not altered.operations_intact()
    assert altered.signed_bytes() == checkpoint.signed_bytes()  # hence the separate digest check
    assert "operations" not in checkpoint.head()


def test_the_log_tree_orders_leaves_by_checkpoint_then_source_then_offset() -> None:
    """Two checkpoints over two sources: leaves go checkpoint by checkpoint, sources sorted, offsets ascending."""
    def coverage(last: int) -> SourceCoverage:
        return SourceCoverage(0, last, "", ())

    hashes = {("b", o): hashlib.sha256(f"b{o}".encode()).hexdigest() for o in range(6)}
    hashes |= {("a", o): hashlib.sha256(f"a{o}".encode()).hexdigest() for o in range(0, 10, 2)}
    shuffled = list(hashes.items())
    random.Random(1).shuffle(shuffled)
    rows = pa.table({"source": [s for (s, _o), _h in shuffled], "source_offset": [o for (_s, o), _h in shuffled],
                     "hash": [h for _k, h in shuffled]})
    first = Checkpoint.new(0, "t", "k", {"b": coverage(2), "a": coverage(4)}, {}, "")
    second = Checkpoint.new(1, "t", "k", {"a": coverage(8), "b": coverage(5)}, {}, "")
    order = [("a", 0), ("a", 2), ("a", 4), ("b", 0), ("b", 1), ("b", 2),
             ("a", 6), ("a", 8), ("b", 3), ("b", 4), ("b", 5)]
    expected = MerkleTree(leaf_hashes([hashes[k] for k in order]))
    sizes = [(checkpoint.sequence, tree.size, tree.root) for checkpoint, tree in fold(rows, [first, second])]
    assert sizes == [(0, 6, expected.root(6)), (1, 11, expected.root(11))]
    signed = replace(second, log=LogTree("o", 11, expected.root(11).hex(), ()))
    old_root, new_root, proof = consistency_proof(rows, [first, signed], 6, 11)
    assert (old_root, new_root) == (expected.root(6), expected.root(11))
    assert proof == [expected._subtree(a, b) for a, b in consistency_ranges(6, 11)]
