"""Inclusion proofs: one event, its audit path, and the signed checkpoint whose Merkle root covers it.

A proof is JSON::

    {"format": "secureml-audit-inclusion-proof/1",
     "event": {every field of the event, timestamps as integer microseconds},
     "source": ..., "source_offset": ..., "leaf_index": i, "tree_size": n,
     "audit_path": [hex, ...], "checkpoint": {the checkpoint's signed body and signature}}

Checking it needs only the public key: the event's hash is recomputed from its fields, the
root from the hash and the audit path (RFC 9162), and the checkpoint's signature is checked.

A consistency proof shows that the log tree of one checkpoint extends that of an earlier one::

    {"format": "secureml-audit-consistency-proof/1", "old": C2SP checkpoint note,
     "new": C2SP checkpoint note (with any cosignatures), "proof": [base64 hash, ...]}

checked with the log's public key: both notes signed, the RFC 9162 proof between their roots.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from secureml.audit.codec import canonical_bytes
from secureml.audit.config import resolve_config
from secureml.audit.schema import TIMESTAMP_FIELDS, field_names
from secureml.integrity.checkpoints import Checkpoint, read_note, stored_checkpoints
from secureml.integrity.exceptions import NoteError, ProofError
from secureml.integrity.keys import key_id, signature_valid
from secureml.integrity.lakerows import snapshot_rows
from secureml.integrity.logtree import consistency_proof, lake_rows
from secureml.integrity.merkle import MerkleTree, consistency_holds, leaf_hashes, root_from_audit_path
from secureml.integrity.notes import SignedNote, parse_note, verified_by
from secureml.integrity.treehead import TreeHead, log_key
from secureml.lake.table import Lake
from secureml.retention.positions import with_removed_leaves

FORMAT = "secureml-audit-inclusion-proof/1"
CONSISTENCY_FORMAT = "secureml-audit-consistency-proof/1"


def _event_row(lake: Lake, event_id: str) -> dict[str, Any]:
    """Every field of one event (timestamps as microseconds), with its source and offset."""
    _manifest, rows = snapshot_rows(lake, (*field_names(), "source", "source_offset"), "event_id = ?", [event_id])
    if rows.num_rows != 1:
        raise ProofError(
            f"no event {event_id!r} in the lake at {lake.root}" if rows.num_rows == 0 else
            f"event {event_id!r} appears {rows.num_rows} times in the lake: it was tampered with; run "
            "`secureml-audit verify`"
        )
    row = rows.to_pylist()[0]
    for name in TIMESTAMP_FIELDS:
        row[name] = int(rows.column(name).cast("int64")[0].as_py())
    return row


def prove(log_dir: str | os.PathLike[str] | None, event_id: str) -> dict[str, Any]:
    """An inclusion proof of one event in the latest signed checkpoint that covers it."""
    lake = Lake(resolve_config(log_dir=log_dir, bootstrap_servers="").log_dir)
    row = _event_row(lake, event_id)
    source, offset = row.pop("source"), row.pop("source_offset")
    covering = [s.checkpoint for s in stored_checkpoints(lake.root)
                if s.checkpoint is not None and source in s.checkpoint.sources
                and s.checkpoint.sources[source].last_offset >= offset]
    if not covering:
        raise ProofError(
            f"event {event_id!r} is newer than every checkpoint of the lake: run the materializer "
            "(`secureml-audit materialize --once`) to sign it, then prove again"
        )
    checkpoint = covering[-1]
    coverage = checkpoint.sources[source]
    _manifest, leaves = snapshot_rows(lake, ("source", "source_offset", "hash"), "source = ? AND source_offset <= ?",
                                      [source, coverage.last_offset], order_by="source_offset")
    leaves = with_removed_leaves(lake, leaves)  # events retention removed keep their place in the tree
    leaves = leaves.filter(pc.and_(pc.equal(leaves["source"], source),
                                   pc.less_equal(leaves["source_offset"], coverage.last_offset)))
    leaves = leaves.sort_by("source_offset")
    tree = MerkleTree(leaf_hashes(leaves.column("hash").to_pylist()))
    if tree.size != coverage.tree_size or tree.root(tree.size).hex() != coverage.root:
        raise ProofError(
            f"the lake's events of {source} no longer match checkpoint #{checkpoint.sequence}: no honest proof "
            "can be made. Run `secureml-audit verify` to see what changed"
        )
    index = int(np.searchsorted(leaves.column("source_offset").to_numpy(), offset))
    return {
        "format": FORMAT,
        "event": row,
        "source": source,
        "source_offset": offset,
        "leaf_index": index,
        "tree_size": tree.size,
        "audit_path": [node.hex() for node in tree.audit_path(index, tree.size)],
        "checkpoint": checkpoint.head(),
    }


def verify_proof(
    proof: dict[str, Any] | str, public_key: Ed25519PublicKey, *, event_id: str | None = None
) -> Checkpoint:
    """Check an inclusion proof with the public key alone; returns the checkpoint that vouches for the event.

    Raises ProofError saying what does not hold.
    """
    try:
        raw = json.loads(proof) if isinstance(proof, str) else proof
        if raw.get("format") != FORMAT:
            raise ProofError(f"not an inclusion proof of this kind (format {raw.get('format')!r}, expected {FORMAT})")
        event = raw["event"]
        checkpoint = Checkpoint.from_dict(raw["checkpoint"])
        coverage = checkpoint.sources[raw["source"]]
        index, size = int(raw["leaf_index"]), int(raw["tree_size"])
        path = [bytes.fromhex(node) for node in raw["audit_path"]]
        content = canonical_bytes(event, int(event["schema_version"]))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ProofError(f"malformed proof: {type(exc).__name__}: {exc}") from None
    if event_id is not None and event.get("event_id") != event_id:
        raise ProofError(f"the proof is about event {event.get('event_id')!r}, not {event_id!r}")
    if hashlib.sha256(content).hexdigest() != event.get("hash"):
        raise ProofError("the event in the proof does not match its hash: its fields were changed")
    if checkpoint.key_id != key_id(public_key) or not signature_valid(
        public_key, checkpoint.signed_bytes(), checkpoint.signature
    ):
        raise ProofError(f"checkpoint #{checkpoint.sequence} is not signed by this public key: forged, altered, "
                         "or the wrong key was given")
    root = root_from_audit_path(leaf_hashes([event["hash"]])[0], index, size, path)
    if size != coverage.tree_size or root is None or root.hex() != coverage.root:
        raise ProofError(f"the event is not in the tree checkpoint #{checkpoint.sequence} signed for "
                         f"{raw['source']}: the audit path leads to another root")
    return checkpoint


def _resolve(lake: Lake, chain: list[Checkpoint], spec: str, what: str) -> tuple[Checkpoint, SignedNote]:
    """A checkpoint named by sequence number, ``latest``, or a saved C2SP checkpoint note file, with its note."""
    logged = [c for c in chain if c.log is not None]
    if not logged:
        raise ProofError("the lake has no checkpoint with a log tree: run the materializer to write one")
    if spec == "latest" or spec.isdigit():
        found = logged[-1] if spec == "latest" else next((c for c in logged if c.sequence == int(spec)), None)
        if found is None:
            raise ProofError(f"{what}: no checkpoint #{spec} with a log tree in the lake (checkpoints "
                             f"#{logged[0].sequence}..#{logged[-1].sequence} have one)")
        try:
            note = read_note(lake.root, found.sequence)
        except NoteError as exc:
            raise ProofError(f"{what}: {exc}") from None
        if note is None:
            raise ProofError(f"{what}: checkpoint #{found.sequence} has no note file: removed from the lake")
        return found, note
    try:
        note = parse_note(Path(spec).read_bytes(), spec)
        head = TreeHead.parse(note.text, spec)
    except OSError as exc:
        raise ProofError(f"{what}: {spec!r} is neither a checkpoint number, 'latest', nor a readable note file "
                         f"({exc.strerror})") from None
    except NoteError as exc:
        raise ProofError(f"{what}: {exc}") from None
    same = [c for c in logged if c.log is not None and c.log.origin == head.origin and c.log.tree_size == head.size]
    if not same:
        raise ProofError(f"{what}: no checkpoint of the lake has a log tree of {head.size} events of {head.origin}")
    assert same[-1].log is not None
    if bytes.fromhex(same[-1].log.root) != head.root:
        raise ProofError(f"{what}: the lake's log tree of {head.size} events has another root than the checkpoint "
                         f"in {spec}: the log was rewritten since (a fork)")
    return same[-1], note


def prove_consistency(log_dir: str | os.PathLike[str] | None, old: str, new: str = "latest") -> dict[str, Any]:
    """A consistency proof (RFC 6962) that the log tree of checkpoint ``new`` extends that of ``old``.

    Each is a checkpoint number, ``latest``, or the path of a saved C2SP checkpoint note.
    """
    lake = Lake(resolve_config(log_dir=log_dir, bootstrap_servers="").log_dir)
    chain = [s.checkpoint for s in stored_checkpoints(lake.root) if s.checkpoint is not None]
    old_checkpoint, old_note = _resolve(lake, chain, str(old), "OLD")
    new_checkpoint, new_note = _resolve(lake, chain, str(new), "NEW")
    assert old_checkpoint.log is not None and new_checkpoint.log is not None
    if old_checkpoint.log.tree_size > new_checkpoint.log.tree_size:
        raise ProofError(f"OLD ({old_checkpoint.log.tree_size} events) is larger than NEW "
                         f"({new_checkpoint.log.tree_size} events): give the older checkpoint first")
    upto = [c for c in chain if c.sequence <= new_checkpoint.sequence]
    _old_root, _new_root, path = consistency_proof(lake_rows(lake), upto, old_checkpoint.log.tree_size,
                                                   new_checkpoint.log.tree_size)
    return {"format": CONSISTENCY_FORMAT, "old": old_note.encode(), "new": new_note.encode(),
            "proof": [base64.b64encode(node).decode() for node in path]}


def verify_consistency_proof(proof: dict[str, Any] | str, public_key: Ed25519PublicKey) -> tuple[TreeHead, TreeHead]:
    """Check a consistency proof with the log's public key alone; returns the old and new tree heads."""
    try:
        raw = json.loads(proof) if isinstance(proof, str) else proof
        if raw.get("format") != CONSISTENCY_FORMAT:
            raise ProofError(f"not a consistency proof (format {raw.get('format')!r}, expected {CONSISTENCY_FORMAT})")
        notes = [parse_note(raw[name], f"{name} checkpoint") for name in ("old", "new")]
        heads = [TreeHead.parse(note.text, f"{name} checkpoint") for note, name in zip(notes, ("old", "new"))]
        path = [base64.b64decode(node, validate=True) for node in raw["proof"]]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ProofError(f"malformed proof: {type(exc).__name__}: {exc}") from None
    old, new = heads
    if old.origin != new.origin:
        raise ProofError(f"the checkpoints are of two logs ({old.origin!r} and {new.origin!r})")
    for note, name in zip(notes, ("old", "new")):
        try:
            signed = verified_by(note, log_key(old.origin, public_key)) is not None
        except NoteError:
            signed = False
        if not signed:
            raise ProofError(f"the {name} checkpoint is not signed by this public key: forged, altered, or the "
                             "wrong key was given")
    if any(len(node) != 32 for node in path) or not consistency_holds(old.size, new.size, old.root, new.root, path):
        raise ProofError(f"the log tree of {new.size} events does not extend the one of {old.size} events: "
                         "history was rewritten between them (or the proof was altered)")
    return old, new
