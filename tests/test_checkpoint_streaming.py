"""The checkpointer streams a lake's new rows: what it signs equals what hashing them all in memory gives."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from support.integrity import (  # noqa: F401 - signing_key_fixture is autouse
    Keys,
    log_operations,
    signing_key_fixture,
)

from conftest import Harness
from secureml.integrity import checkpointer, verify
from secureml.integrity.checkpointer import LakeCheckpointer
from secureml.integrity.checkpoints import stored_checkpoints
from secureml.integrity.lakerows import by_source, snapshot_rows
from secureml.integrity.logtree import LogFold
from secureml.integrity.merkle import (
    MerkleTree,
    consistency_proof_from,
    consistency_proof_with,
    leaf_hashes,
    new_ranges,
)
from secureml.lake.table import Lake
from secureml.materializer.runner import Materializer
from secureml.stream.sources import EmbeddedSource


def test_new_leaves_hashed_in_chunks_give_the_proof_of_the_whole_tree() -> None:
    """Consistency proofs from the new ranges' hashes, folded chunk by chunk, equal those of the tree in memory."""
    leaves = leaf_hashes(f"{i:064x}" for i in range(70))
    tree = MerkleTree(leaves)
    for old, new in ((1, 2), (5, 8), (13, 70), (32, 64), (33, 70), (64, 70)):
        fold = LogFold(new_ranges(old, new), old, tree.frontier(old))
        for start in range(old, new, 3):
            fold.extend(b"".join(leaves[start:min(start + 3, new)]))
        assert fold.root == tree.root(new)
        assert consistency_proof_with(tree.frontier(old), old, new, fold.hashes) == \
            consistency_proof_from(tree.frontier(old), old, leaves[old:new])


def test_the_checkpointer_signs_in_small_batches_what_the_rows_hash_to(
        embedded: Harness, signing_key: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    """Read 5 rows at a time, two checkpoints sign each source's Merkle root, the chain heads and the log tree."""
    monkeypatch.setattr(checkpointer, "BATCH_ROWS", 5)
    rng = random.Random(5)
    lake = Lake(embedded.log_dir)
    signer = LakeCheckpointer(signing_key.private, create_key=False)
    for run in range(2):
        log_operations(embedded, rng, 4, 3 + 4 * run)
        Materializer(lake, EmbeddedSource(embedded.log_dir)).run(once=True)
        assert signer.checkpoint(lake) is not None
    _snapshot, rows = snapshot_rows(lake, ("operation_id", "seq", "hash", "source", "source_offset"))
    spans, _offsets, hashes = by_source(rows)
    last = stored_checkpoints(lake.root)[-1].checkpoint
    assert last is not None and last.log is not None
    for source, (start, end) in spans.items():
        tree = MerkleTree(leaf_hashes(hashes.slice(start, end - start).to_pylist()))
        assert last.sources[source].root == tree.root(tree.size).hex()
    heads = {r["operation_id"]: r for r in rows.sort_by("seq").to_pylist()}
    assert {op: (h.last_seq, h.head_hash) for op, h in last.operations.items()} == \
        {op: (r["seq"], r["hash"]) for op, r in heads.items() if op in last.operations}
    assert last.log.tree_size == rows.num_rows
    assert verify(embedded.log_dir, public_key=signing_key.public).ok
    assert not list(Path(embedded.log_dir).glob(".checkpoint-*"))  # its work directory is gone

