"""``verify``: the lake checked against itself (hash chains) and against its signed checkpoints."""

from __future__ import annotations

import os
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from secureml.audit.config import resolve_config
from secureml.audit.integrity.chains import check_chains
from secureml.audit.integrity.checkpoints import LAKE_PUBLIC_KEY, checkpoint_dir, stored_checkpoints
from secureml.audit.integrity.exceptions import IntegrityError
from secureml.audit.integrity.keys import load_public_key
from secureml.audit.integrity.result import (
    NO_CHECKPOINT,
    NO_PUBLIC_KEY,
    UNTRUSTED_KEY,
    Finding,
    VerificationResult,
)
from secureml.audit.integrity.scan import FileRetired, Progress, scan_lake
from secureml.audit.integrity.signed import check_checkpoints, check_heads, check_roots
from secureml.audit.lake import Lake

PublicKey = str | os.PathLike[str] | Ed25519PublicKey
_SCAN_ATTEMPTS = 3


def _trusted_key(lake: Lake, public_key: PublicKey | None) -> tuple[Ed25519PublicKey | None, str, list[Finding]]:
    """The key to check signatures with, where it came from, and a warning when that is the lake itself."""
    if isinstance(public_key, Ed25519PublicKey):
        return public_key, "given", []
    if public_key is not None:
        return load_public_key(Path(public_key)), f"given: {public_key}", []
    copy = checkpoint_dir(lake.root) / LAKE_PUBLIC_KEY
    if copy.exists():
        return load_public_key(copy), f"lake copy (untrusted): {copy}", [Finding(
            UNTRUSTED_KEY, "warning", f"signatures were checked with the public key stored in the lake itself "
            f"({copy}): whoever could rewrite the lake could have replaced it. Pass --public-key with the key "
            "you received from the operator for proof")]
    return None, "none", []


def verify(
    log_dir: str | os.PathLike[str] | None = None,
    public_key: PublicKey | None = None,
    operation_id: str | None = None,
    progress: Progress | None = None,
) -> VerificationResult:
    """Verify the lake under ``log_dir``: every event, every operation's chain, every signed checkpoint.

    ``public_key`` is a PEM file (or key) to check signatures with; without it the lake's own
    copy is used, with a warning. ``operation_id`` verifies that operation only (its chain and
    signed head; Merkle roots need the whole lake). ``progress(done, total)`` is called as
    rows are read. The result's ``ok`` is True only when nothing is wrong.
    """
    started = time.perf_counter()
    directory = resolve_config(log_dir=log_dir, bootstrap_servers="").log_dir
    lake = Lake(directory)
    if not lake.manifest_path.exists() and not checkpoint_dir(lake.root).is_dir():
        raise IntegrityError(
            f"no lake to verify at {lake.root}: materialize the events first "
            f"(`secureml-audit materialize --once --log-dir {directory}`), or pass the directory that holds lake/"
        )
    for attempt in range(_SCAN_ATTEMPTS):
        try:
            scan = scan_lake(lake, lake.snapshot(), operation_id, progress)
            break
        except FileRetired:
            if attempt == _SCAN_ATTEMPTS - 1:
                raise IntegrityError(f"the lake at {lake.root} kept changing under the verifier (compactions); "
                                     "try again, or verify a copy") from None
    key, key_origin, findings = _trusted_key(lake, public_key)
    stored = stored_checkpoints(lake.root)
    checkpoints, state = check_checkpoints(stored, key)
    if not stored:
        findings = [Finding(
            NO_CHECKPOINT, "error" if public_key is not None else "warning",
            "the lake has no signed checkpoint, so nothing is signed: deleted operations and consistently "
            "rewritten chains cannot be detected. The materializer writes checkpoints; if it did, "
            "someone removed lake/_checkpoints")]
    elif key is None:
        findings.append(Finding(NO_PUBLIC_KEY, "error", "no public key: pass --public-key with the key of the "
                                "materializer that signed the checkpoints"))
    operations = check_chains(scan.rows, scan.files)
    if operation_id is None:
        check_roots(scan.rows, stored, checkpoints)
    head_findings, not_covered = check_heads(scan.rows, state, operations, scan.files, operation_id)
    return VerificationResult(
        log_dir=str(directory),
        events=scan.rows.num_rows,
        operations=sorted(operations.values(), key=lambda op: (op.status == "intact", op.operation_id)),
        checkpoints=checkpoints,
        findings=scan.findings + findings + head_findings,
        public_key=key_origin,
        events_not_covered=not_covered,
        seconds=time.perf_counter() - started,
    )
