"""``verify``: the lake checked against itself (hash chains) and against its signed checkpoints."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

import pyarrow as pa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from secureml.audit.config import resolve_config
from secureml.audit.privacy.erase import ERASURE_EVENT
from secureml.audit.transports.embedded import log_path
from secureml.integrity.chains import ChainStream, check_chains_in_order
from secureml.integrity.checkpoints import LAKE_PUBLIC_KEY, StoredCheckpoint, checkpoint_dir, stored_checkpoints
from secureml.integrity.exceptions import IntegrityError
from secureml.integrity.keys import load_public_key
from secureml.integrity.result import (
    LOG_ABSENT,
    LOG_DELETED,
    LOG_TRUNCATED,
    NO_CHECKPOINT,
    NO_PUBLIC_KEY,
    UNTRUSTED_KEY,
    Finding,
    VerificationResult,
)
from secureml.integrity.rowstore import RowStore
from secureml.integrity.scan import SKELETON, Progress, scan_lake
from secureml.integrity.signed import check_checkpoints, check_heads, check_trees
from secureml.integrity.witnessed import WitnessPolicy, check_witnessed
from secureml.lake.table import Lake, Snapshot
from secureml.retention.holds import RETENTION_DIR
from secureml.retention.records import stored_records
from secureml.retention.verification import expired_events

PublicKey = str | os.PathLike[str] | Ed25519PublicKey


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


def _up_to(stored: list[StoredCheckpoint], version: int | None) -> list[StoredCheckpoint]:
    """The checkpoints of the chain up to the last one taken at or before a table version."""
    kept: list[StoredCheckpoint] = []
    for entry in stored:
        taken_at = entry.checkpoint.table_version if entry.checkpoint is not None else None
        if taken_at is not None and (version is None or taken_at > version):
            break
        kept.append(entry)
    return kept


def verify(
    log_dir: str | os.PathLike[str] | None = None,
    public_key: PublicKey | None = None,
    operation_id: str | None = None,
    progress: Progress | None = None,
    as_of: int | str | dt.datetime | None = None,
    witnesses: WitnessPolicy | None = None,
) -> VerificationResult:
    """Verify the lake under ``log_dir``: every event, every operation's chain, every signed checkpoint.

    ``public_key`` is a PEM file (or key) to check signatures with; without it the lake's own
    copy is used, with a warning. ``operation_id`` verifies that operation only (its chain and
    signed head; Merkle roots need the whole lake). ``progress(done, total)`` is called as
    rows are read. ``as_of`` (a Delta version or a time) verifies the lake as it was then,
    against the checkpoints taken up to that version. ``witnesses`` demands cosignatures on the
    latest checkpoint (``witnessed``). The result's ``ok`` is True only when nothing is wrong.
    """
    started = time.perf_counter()
    directory = resolve_config(log_dir=log_dir, bootstrap_servers="").log_dir
    lake = Lake(directory)
    if not lake.exists() and not checkpoint_dir(lake.root).is_dir():
        raise IntegrityError(
            f"no lake to verify at {lake.uri}: materialize the events first "
            f"(`secureml-audit materialize --once --log-dir {directory}`), or pass the directory that holds lake/"
        )
    snapshot = lake.snapshot(as_of)
    with RowStore(Path(directory)) as store:
        return _verify(lake, snapshot, store, public_key, operation_id, progress, as_of, witnesses, started)


def _verify(
    lake: Lake, snapshot: Snapshot, store: RowStore, public_key: PublicKey | None, operation_id: str | None,
    progress: Progress | None, as_of: int | str | dt.datetime | None, witnesses: WitnessPolicy | None, started: float,
) -> VerificationResult:
    """``verify`` with the rows kept in ``store`` as they are scanned (most chains judged on the way), and the other
    checks reading them back from it."""
    chains = ChainStream()  # judges most chains as the rows go by; the rest are sorted and judged after
    scan = scan_lake(lake, snapshot, lambda rows: store.add(pa.RecordBatchReader.from_batches(
        SKELETON, chains.passing(rows))), operation_id, progress)
    key, key_origin, findings = _trusted_key(lake, public_key)
    stored = stored_checkpoints(lake.root)
    if as_of is not None:  # the chain as it stood at that version: later checkpoints cover rows it lacks
        stored = _up_to(stored, snapshot.version)
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
    # Events expired under valid retention records rejoin the rows as they were signed.
    # Only a lake with retention records needs the positions in memory, to match removed events against.
    positions = store.columns(["source", "source_offset"]) if stored_records(lake.root / RETENTION_DIR) \
        else SKELETON.empty_table()
    expiry = expired_events(lake, positions, key, bool(stored), len(scan.files), operation_id,
                            snapshot.version if as_of is not None else None)
    del positions
    store.add(expiry.rows)
    for batch in expiry.rows.to_batches():
        chains.add(batch)
    files = scan.files + expiry.files
    findings += expiry.findings + _embedded_log_findings(lake, snapshot, store.sources(), expiry.segments)
    operations = chains.perfect()
    if chains.suspect:
        operations.update(check_chains_in_order(store.by_operation(chains.suspect), files))
    if operation_id is None:
        check_trees(store, stored, checkpoints)
    head_findings, not_covered = check_heads(store.con, state, operations, files, operation_id)
    witnessed = "not checked (pass --witness-key)"
    if witnesses is not None and witnesses.active:
        witness_findings, witnessed = check_witnessed(lake.root, stored, key, witnesses)
        findings += witness_findings
    return VerificationResult(
        log_dir=str(lake.log_dir),
        events=scan.events,
        operations=sorted(operations.values(), key=lambda op: (op.status == "intact", op.operation_id)),
        checkpoints=checkpoints,
        findings=scan.findings + findings + head_findings,
        public_key=key_origin,
        events_not_covered=not_covered,
        witnessed=witnessed,
        seconds=time.perf_counter() - started,
        expired_events=expiry.events,
        retention=expiry.notes,
        subjects_erased=store.count_of_type(ERASURE_EVENT),
    )


def _embedded_log_findings(lake: Lake, snapshot: Snapshot, sources: list[str], expired: set[str]) -> list[Finding]:
    """The embedded log's segments against what the lake recorded as read from them.

    Segments are never deleted or shortened by secureml-audit, so a segment the lake read up to
    byte N that is gone, or now shorter than N, was tampered with (events not materialised yet
    went with it), unless a retention record deleted it (``expired``). A lake copied without its
    log is only said to be so.
    """
    sources = [s for s in sources if s and s.startswith("log/")]
    if not lake.local or not sources:
        return []
    directory = log_path(lake.log_dir)
    if not directory.is_dir():
        return [Finding(LOG_ABSENT, "warning", f"the embedded log ({directory}) is not beside this lake (a copy of "
                        "the lake alone?): whether it was truncated or deleted was not checked")]
    findings = []
    for source, held in snapshot.positions(sources).items():
        segment = directory / source.removeprefix("log/")
        if source in expired and not segment.exists():
            continue
        if not segment.is_file():
            findings.append(Finding(LOG_DELETED, "error", f"the embedded log segment {segment.name}, which the lake "
                                    f"read up to byte {held:,}, is gone: deleted after it was materialised (events "
                                    "logged after that position went with it)", source=source))
        elif (size := segment.stat().st_size) < held:
            findings.append(Finding(LOG_TRUNCATED, "error", f"the embedded log segment {segment.name} is {size:,} "
                                    f"bytes, shorter than the {held:,} bytes the lake read from it: truncated",
                                    source=source))
    return findings
