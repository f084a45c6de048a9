"""Inclusion proofs: one event, its audit path, and the signed checkpoint whose Merkle root covers it.

A proof is JSON::

    {"format": "secureml-audit-inclusion-proof/1",
     "event": {every field of the event, timestamps as integer microseconds},
     "source": ..., "source_offset": ..., "leaf_index": i, "tree_size": n,
     "audit_path": [hex, ...], "checkpoint": {the checkpoint's signed body and signature}}

Checking it needs only the public key: the event's hash is recomputed from its fields, the
root from the hash and the audit path (RFC 9162), and the checkpoint's signature is checked.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from secureml.audit.codec import canonical_bytes
from secureml.audit.config import resolve_config
from secureml.audit.schema import TIMESTAMP_FIELDS, field_names
from secureml.integrity.checkpoints import Checkpoint, stored_checkpoints
from secureml.integrity.exceptions import ProofError
from secureml.integrity.keys import key_id, signature_valid
from secureml.integrity.lakerows import snapshot_rows
from secureml.integrity.merkle import MerkleTree, leaf_hashes, root_from_audit_path
from secureml.lake.table import Lake

FORMAT = "secureml-audit-inclusion-proof/1"


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
    _manifest, leaves = snapshot_rows(lake, ("source_offset", "hash"), "source = ? AND source_offset <= ?",
                                      [source, coverage.last_offset], order_by="source_offset")
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
