"""C2SP signed notes, tlog checkpoints, cosignatures and RFC 6962 consistency proofs, byte for byte.

Two sources of truth: the specifications' own examples (c2sp.org/signed-note, tlog-checkpoint,
tlog-cosignature, tlog-witness), and vectors made once by the Go reference implementations
(golang.org/x/mod/sumdb/note and tlog, github.com/transparency-dev/formats/note) with
scripts/c2sp-vectors, committed as tests/data/c2sp_go_vectors.json, and output of this code
that the same Go packages verified (tests/data/c2sp_go_checked.json). Go needs the module proxy,
which CI may not reach; rerun the script to regenerate or recheck them.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secureml.audit.exceptions import AuditError
from secureml.integrity.exceptions import NoteError, ProofError
from secureml.integrity.merkle import (
    MerkleTree,
    consistency_holds,
    consistency_proof_from,
    consistency_ranges,
    leaf_hashes,
)
from secureml.integrity.notes import (
    COSIGNATURE_V1,
    NoteKey,
    SignedNote,
    cosignature,
    cosignature_message,
    cosignature_time,
    parse_note,
    parse_vkey,
    verified_by,
)
from secureml.integrity.proofs import verify_consistency_proof
from secureml.integrity.treehead import TreeHead, log_key, open_checkpoint, sign_tree_head

VECTORS: dict[str, Any] = json.loads((Path(__file__).parent / "data" / "c2sp_go_vectors.json").read_text())

SPEC_CHECKPOINT = (
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n"
    "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+"
    "zyWE+xeMcTOAYQ8=\n"
    "— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0"
    "xUe+mbIUBkBIfZ+qnA==\n"
)
SPEC_POEM = (
    "Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n\ned è subito sera.\n\n"
    "— quasimodo.example/salvatore NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9oJKONrMouFSQU0xMcXxj99ihAQwaqP3"
    "ZekRwNtIc=\n"
)


def _keys() -> tuple[Ed25519PrivateKey, Ed25519PrivateKey]:
    return (Ed25519PrivateKey.from_private_bytes(bytes.fromhex(VECTORS["log_seed"])),
            Ed25519PrivateKey.from_private_bytes(bytes.fromhex(VECTORS["witness_seed"])))


def test_the_spec_checkpoint_parses_and_reencodes_byte_for_byte() -> None:
    """tlog-checkpoint's example: origin, size, root, two signature lines, re-encoded identically."""
    note = parse_note(SPEC_CHECKPOINT)
    head = TreeHead.parse(note.text)
    assert (head.origin, head.size, base64.b64encode(head.root).decode()) == (
        "example.com/behind-the-sofa", 20852163, "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    assert head.text() == note.text and note.encode() == SPEC_CHECKPOINT
    assert [s.name for s in note.signatures] == ["example.com/behind-the-sofa", "witness.example.com/w1"]


def test_the_spec_cosignature_carries_the_time_of_the_spec_signed_message() -> None:
    """tlog-cosignature's example: key ID then 8-byte time 1679315147, the time in its example message."""
    cosig = parse_note(SPEC_CHECKPOINT).signatures[1]
    assert cosig.key_id.hex() == "8d66cf3f" and len(cosig.signature) == 8 + 64
    assert cosignature_time(cosig) == 1679315147
    assert cosignature_message(parse_note(SPEC_CHECKPOINT).text, 1679315147) == (
        b"cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n"
        b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n")


def test_the_spec_note_text_ends_at_the_last_blank_line() -> None:
    """signed-note's example poem keeps its inner blank line in the text."""
    note = parse_note(SPEC_POEM)
    assert note.text.endswith("\n\ned è subito sera.\n") and note.signatures[0].name == "quasimodo.example/salvatore"
    assert note.encode() == SPEC_POEM


def test_keys_and_vkeys_match_go() -> None:
    """Key IDs and vkeys of a log key (0x01) and a cosigner key (0x04) equal the Go packages'."""
    log, witness = _keys()
    assert log_key(VECTORS["log_name"], log.public_key()).vkey() == VECTORS["log_vkey"]
    assert NoteKey(VECTORS["witness_name"], witness.public_key(), COSIGNATURE_V1).vkey() == VECTORS["witness_vkey"]
    assert parse_vkey(VECTORS["witness_vkey"], expect=COSIGNATURE_V1).vkey() == VECTORS["witness_vkey"]


def test_signed_and_cosigned_checkpoints_are_byte_identical_to_go() -> None:
    """Our note signature equals Go's; Go's cosignature verifies here and re-signed at its time is identical."""
    log, witness = _keys()
    head = TreeHead.parse(VECTORS["checkpoint_text"])
    assert head.text() == VECTORS["checkpoint_text"]
    assert sign_tree_head(head, log).encode() == VECTORS["signed_checkpoint"]
    _head, note = open_checkpoint(VECTORS["cosigned_checkpoint"], [parse_vkey(VECTORS["log_vkey"])])
    found = verified_by(note, parse_vkey(VECTORS["witness_vkey"]))
    assert found is not None
    ours = cosignature(note.text, VECTORS["witness_name"], witness, cosignature_time(found))
    assert SignedNote(note.text, (note.signatures[0], ours)).encode() == VECTORS["cosigned_checkpoint"]


def test_roots_and_every_consistency_proof_match_go_tlog() -> None:
    """RFC 6962 roots of 1..37 leaves and all 703 proofs m -> n equal golang.org/x/mod/sumdb/tlog's, and verify."""
    leaves = leaf_hashes(VECTORS["leaves"])
    tree = MerkleTree(leaves)
    assert {str(n): tree.root(n).hex() for n in range(1, 38)} == VECTORS["roots"]
    for case in VECTORS["consistency"]:
        m, n = case["Old"], case["New"]
        expected = [bytes.fromhex(h) for h in case["Proof"]]
        assert [tree._subtree(a, b) for a, b in consistency_ranges(m, n)] == expected
        assert consistency_proof_from(tree.frontier(m), m, leaves[m:n]) == expected
        assert consistency_holds(m, n, tree.root(m), tree.root(n), expected)


def test_a_consistency_proof_fails_for_another_tree_or_a_changed_node() -> None:
    """Changed nodes, swapped roots, wrong sizes and a rewritten old leaf are all refused."""
    leaves = leaf_hashes(VECTORS["leaves"])
    tree = MerkleTree(leaves)
    proof = consistency_proof_from(tree.frontier(13), 13, leaves[13:30])
    assert consistency_holds(13, 30, tree.root(13), tree.root(30), proof)
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = bytes(32)
        assert not consistency_holds(13, 30, tree.root(13), tree.root(30), bad)
    assert not consistency_holds(13, 30, tree.root(30), tree.root(13), proof)
    assert not consistency_holds(12, 30, tree.root(12), tree.root(30), proof)
    assert not consistency_holds(13, 30, tree.root(13), tree.root(30), proof[:-1])
    forked = MerkleTree([leaves[0], *leaf_hashes(["f" * 64]), *leaves[2:]])
    assert not consistency_holds(13, 30, tree.root(13), forked.root(30),
                                 consistency_proof_from(forked.frontier(13), 13, leaves[13:30]))
    assert consistency_holds(0, 30, tree.root(0), tree.root(30), [])
    assert not consistency_holds(30, 30, tree.root(30), forked.root(30), [])


@pytest.mark.parametrize(("text", "rule"), [
    ("example.com/log\n007\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n", "tree size"),
    ("example.com/log\n7\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I\n", "root hash"),
    ("example.com/log\n7\n", "at least 3 lines"),
    ("example.com/log\n7\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=", "newline"),
    ("\n7\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n", "origin"),
])
def test_malformed_checkpoint_texts_are_refused_naming_the_rule(text: str, rule: str) -> None:
    """Leading zeroes, unpadded base64, missing lines or newline, an empty origin: NoteError naming it."""
    with pytest.raises(NoteError, match=rule) as caught:
        TreeHead.parse(text)
    assert isinstance(caught.value, AuditError)


@pytest.mark.parametrize(("vkey", "rule"), [
    ("witness.example/w1+6df52563", "expected <name>"),
    ("witness.example/w1+00000000+BGQWa/aSGZH20Eahl6CuOP6Zosg/6j6/D+JbNayVa4AE", "does not match"),
    ("witness.example/w1+6df52563+BGQWa/aSGZH20Eahl6CuOP6Zosg/6j6/D+JbNayVa4", "key"),
    ("other.example/w1+6df52563+BGQWa/aSGZH20Eahl6CuOP6Zosg/6j6/D+JbNayVa4AE", "does not match"),
])
def test_bad_vkeys_are_refused_naming_the_rule(vkey: str, rule: str) -> None:
    """A vkey with missing parts, a wrong key ID, a truncated key or another name is refused."""
    with pytest.raises(NoteError, match=rule):
        parse_vkey(vkey)
    with pytest.raises(NoteError, match="signature type 0x04"):
        parse_vkey(VECTORS["witness_vkey"], expect=1)


def test_a_note_with_an_altered_text_or_an_unknown_key_does_not_open() -> None:
    """A changed size fails the known key's signature; a note signed only by unknown keys is rejected."""
    altered = VECTORS["signed_checkpoint"].replace("\n37\n", "\n38\n")
    with pytest.raises(NoteError, match="does not verify"):
        open_checkpoint(altered, [parse_vkey(VECTORS["log_vkey"])])
    other = log_key(VECTORS["log_name"], Ed25519PrivateKey.generate().public_key())
    with pytest.raises(NoteError, match="no trusted key"):
        open_checkpoint(VECTORS["signed_checkpoint"], [other])
    with pytest.raises(NoteError, match="no blank line"):
        parse_note(VECTORS["checkpoint_text"])


def test_a_real_lake_and_witness_output_that_go_verified_still_verifies_here() -> None:
    """Notes, a cosignature/v1 by the witness process and a consistency proof made here, verified once by Go.

    tests/data/c2sp_go_checked.json came from a lake materialised with a real witness (3 rounds)
    and `prove --consistency 0 latest`; `go run . check` in scripts/c2sp-vectors verified all of it
    with golang.org/x/mod/sumdb/note, sumdb/tlog and transparency-dev/formats/note.
    """
    checked = json.loads((Path(__file__).parent / "data" / "c2sp_go_checked.json").read_text())
    log = parse_vkey(checked["log_vkey"], expect=1)
    old, new = verify_consistency_proof(checked["proof"], log.public_key)
    assert (old.origin, old.size, new.size) == (log.name, 9, 30)
    cosigned = parse_note(checked["proof"]["new"])
    assert verified_by(cosigned, parse_vkey(checked["witness_vkeys"][0], expect=COSIGNATURE_V1)) is not None
    altered = dict(checked["proof"], new=checked["proof"]["new"].replace("\n30\n", "\n31\n"))
    with pytest.raises(ProofError):
        verify_consistency_proof(altered, log.public_key)
