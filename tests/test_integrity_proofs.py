"""Inclusion proofs: made from the lake, checked with the public key alone, refused when anything differs."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest
from support.integrity import (  # noqa: F401 - signing_key_fixture is autouse
    Keys,
    LakeRows,
    event_hash,
    log_operations,
    materialize,
    signing_key_fixture,
)

from conftest import Harness
from secureml.audit.timeutil import micros_to_datetime
from secureml.integrity import ProofError, prove, verify_proof
from secureml.integrity.keys import generate_key, load_public_key
from secureml.lake.table import Lake
from secureml.materializer.runner import Materializer
from secureml.stream.sources import EmbeddedSource


def lake_with_two_checkpoints(harness: Harness) -> tuple[list[str], list[str]]:
    """Operations materialised in two runs; their ids per run."""
    rng = random.Random(21)
    first = log_operations(harness, rng, 3, 7)
    materialize(harness)
    second = log_operations(harness, rng, 3, 5)
    materialize(harness)
    return first, second


def test_proofs_verify_with_the_public_key_alone(harness: Harness, signing_key: Keys) -> None:
    """Every kind of event, from either checkpoint, is proven by its checkpoint's signature and root."""
    first, second = lake_with_two_checkpoints(harness)
    public = load_public_key(signing_key.public)
    for op, seqs in ((first[0], range(7)), (second[2], range(5))):
        for seq in seqs:
            proof = json.loads(json.dumps(prove(harness.log_dir, f"{op}:{seq}")))  # as it travels
            checkpoint = verify_proof(proof, public, event_id=f"{op}:{seq}")
            assert checkpoint.sequence in (0, 1) and proof["event"]["seq"] == seq


def test_proofs_survive_compaction(embedded: Harness, signing_key: Keys) -> None:
    """After compaction the same event gets the same leaf, root and checkpoint."""
    first, _ = lake_with_two_checkpoints(embedded)
    before = prove(embedded.log_dir, f"{first[1]}:3")
    while Lake(embedded.log_dir).compact(today="9999-12-31"):
        pass
    assert prove(embedded.log_dir, f"{first[1]}:3") == before


@pytest.fixture
def proof_and_key(embedded: Harness, signing_key: Keys) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """Proofs of two events of one lake, and the public key."""
    first, _ = lake_with_two_checkpoints(embedded)
    return prove(embedded.log_dir, f"{first[0]}:2"), prove(embedded.log_dir, f"{first[0]}:4"), \
        load_public_key(signing_key.public)


def test_a_proof_about_another_event_fails(proof_and_key: tuple[dict[str, Any], dict[str, Any], Any]) -> None:
    """A valid proof does not prove another event: neither by id nor with that event swapped in."""
    proof, other, public = proof_and_key
    with pytest.raises(ProofError, match="not"):
        verify_proof(proof, public, event_id=other["event"]["event_id"])
    swapped = {**proof, "event": other["event"]}
    with pytest.raises(ProofError, match="another root"):
        verify_proof(swapped, public)


def test_a_changed_event_fails(proof_and_key: tuple[dict[str, Any], dict[str, Any], Any]) -> None:
    """Any changed field of the proven event, or its hash recomputed to match, breaks the proof."""
    proof, _, public = proof_and_key
    changed = copy.deepcopy(proof)
    changed["event"]["user"] = "mallory"
    with pytest.raises(ProofError, match="does not match its hash"):
        verify_proof(changed, public)
    row = {**changed["event"]}
    for name in ("timestamp", "operation_start"):
        row[name] = micros_to_datetime(row[name])
    changed["event"]["hash"] = event_hash(row)
    with pytest.raises(ProofError, match="another root"):
        verify_proof(changed, public)


def test_a_forged_path_checkpoint_or_key_fails(
    proof_and_key: tuple[dict[str, Any], dict[str, Any], Any], tmp_path: Path
) -> None:
    """A changed audit path, leaf index or checkpoint, or another public key, fails."""
    proof, _, public = proof_and_key
    for mutate, reason in (
        (lambda p: p["audit_path"].__setitem__(0, "00" * 32), "another root"),
        (lambda p: p.__setitem__("leaf_index", p["leaf_index"] + 1), "another root"),
        (lambda p: p["checkpoint"].__setitem__("created_at", "2020-01-01T00:00:00+00:00"), "not signed"),
        (lambda p: p.__setitem__("format", "something-else"), "not an inclusion proof"),
    ):
        forged = copy.deepcopy(proof)
        mutate(forged)
        with pytest.raises(ProofError, match=reason):
            verify_proof(forged, public)
    with pytest.raises(ProofError, match="not signed by this public key"):
        verify_proof(proof, generate_key(tmp_path / "other.pem").public_key())


def test_no_proof_for_unsigned_or_unknown_events(embedded: Harness, signing_key: Keys) -> None:
    """Events newer than every checkpoint, unknown ids, and events of a tampered range get no proof."""
    first, _ = lake_with_two_checkpoints(embedded)
    late = log_operations(embedded, random.Random(22), 1, 3)
    Materializer(Lake(embedded.log_dir), EmbeddedSource(embedded.log_dir), checkpointer=None).run(once=True)
    with pytest.raises(ProofError, match="newer than every checkpoint"):
        prove(embedded.log_dir, f"{late[0]}:1")
    with pytest.raises(ProofError, match="no event"):
        prove(embedded.log_dir, "nope:1")
    rows = LakeRows.load(embedded.log_dir)
    for _path, row in rows.all():
        if row["operation_id"] == first[2] and row["seq"] == 5:
            row["hash"] = "0" * 64
    rows.save()
    with pytest.raises(ProofError, match="no longer match"):
        prove(embedded.log_dir, f"{first[0]}:1")
