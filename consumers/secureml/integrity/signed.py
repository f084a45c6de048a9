"""Checks against the signed checkpoints: signatures, their chain, Merkle roots, chain heads, coverage."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import duckdb
import pyarrow as pa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from secureml.integrity.checkpoints import ChainState, Checkpoint, SourceCoverage, StoredCheckpoint
from secureml.integrity.keys import key_id, signature_valid
from secureml.integrity.lakerows import Leaves, leaves_of
from secureml.integrity.logtree import LogFold, segments
from secureml.integrity.merkle import LEAF_SIZE, extend_frontier, root_of_frontier
from secureml.integrity.result import (
    CHAIN_BROKEN,
    CHECKPOINT_UNREADABLE,
    DELETED_OPERATION,
    FOREIGN,
    LOG_MISMATCH,
    MERKLE_MISMATCH,
    MISPLACED,
    MISSING,
    MODIFIED,
    NOT_COVERED,
    SIGNATURE_INVALID,
    TRUNCATED,
    CheckpointReport,
    Finding,
    OperationReport,
)


def check_checkpoints(
    stored: list[StoredCheckpoint], key: Ed25519PublicKey | None
) -> tuple[list[CheckpointReport], ChainState]:
    """A report per stored checkpoint (signature, link to the one before) and the chain folded."""
    reports: list[CheckpointReport] = []
    state = ChainState()
    previous: Checkpoint | None = None
    trusted = key_id(key) if key is not None else ""
    for item in stored:
        checkpoint = item.checkpoint
        if checkpoint is None:
            reports.append(CheckpointReport(item.name, None, None, None, findings=[Finding(
                CHECKPOINT_UNREADABLE, "error", f"checkpoint file {item.name} is unreadable ({item.problem}): "
                "restore it from a backup or from the Kafka checkpoints topic")]))
            continue
        number = checkpoint.sequence
        report = CheckpointReport(item.name, number, checkpoint.created_at, checkpoint.key_id)
        reports.append(report)

        def error(kind: str, message: str, report: CheckpointReport = report, number: int = number) -> None:
            report.findings.append(Finding(kind, "error", f"checkpoint #{number}: {message}", checkpoint=number))

        if key is None:
            error(SIGNATURE_INVALID, "no public key to check its signature with: pass --public-key")
        elif checkpoint.key_id != trusted:
            error(SIGNATURE_INVALID, f"signed by key {checkpoint.key_id[:16]}..., not by the trusted key "
                  f"{trusted[:16]}...: forged or re-signed, or the wrong public key was given")
        elif not signature_valid(key, checkpoint.signed_bytes(), checkpoint.signature):
            error(SIGNATURE_INVALID, "its signature does not match its content: the checkpoint was altered")
        elif not checkpoint.operations_intact():
            error(SIGNATURE_INVALID, "its chain heads are not the ones its signature covers: the checkpoint "
                  "was altered")
        else:
            report.signature_valid = True
        expected = previous.sequence + 1 if previous else 0
        if number > expected:
            skipped = f"#{expected}" if number == expected + 1 else f"#{expected}..#{number - 1}"
            error(CHAIN_BROKEN, f"the chain skips {skipped} before it: removed from the lake")
        elif number < expected:
            error(CHAIN_BROKEN, f"its sequence repeats or goes back (expected #{expected})")
        elif checkpoint.prev_checkpoint_hash != (previous.digest() if previous else ""):
            error(CHAIN_BROKEN, "it does not link to the checkpoint before it: one of them was replaced")
        else:
            report.chain_intact = True
        state.add(checkpoint)
        previous = checkpoint
    return reports, state


class _SourceClaims:
    """One source's signed roots checked as its leaves go by, claim after claim (in chain order).

    The frontier grows from one claimed offset to the next, so memory stays small whatever the
    source's size; after the first claim its rows do not match, the source is no longer hashed.
    """

    def __init__(self, claims: list[tuple[int, SourceCoverage]]) -> None:
        self.claims = claims
        self.next = 0  # the claim whose range the leaves now passing belong to
        self.size, self.frontier, self.covered = 0, list[bytes](), -1
        self.mismatch: tuple[int, int] | None = None  # (index of the first claim that fails, rows it covers)

    @property
    def open(self) -> bool:
        """True while claims are left to check."""
        return self.mismatch is None and self.next < len(self.claims)

    def restarts(self) -> bool:
        """True when the next claim covers less than the one before it: its rows are read again from the start."""
        return self.claims[self.next][1].last_offset < self.covered

    def extend(self, leaves: bytes) -> None:
        """Leaves of the next claim's range, in order (a leaf block)."""
        self.frontier = extend_frontier(self.frontier, self.size, leaves)
        self.size += len(leaves) // LEAF_SIZE

    def close_claim(self) -> None:
        """The next claim's range has gone by: compare what it signed."""
        coverage = self.claims[self.next][1]
        self.covered = coverage.last_offset
        if self.size != coverage.tree_size or tuple(n.hex() for n in self.frontier) != coverage.frontier \
                or root_of_frontier(self.frontier).hex() != coverage.root:
            self.mismatch = self.next, self.size
        self.next += 1


def check_trees(rows: pa.Table | Leaves, stored: list[StoredCheckpoint], reports: list[CheckpointReport]) -> None:
    """Every checkpoint's per-source Merkle roots and its log tree, recomputed from the lake in one pass.

    Each leaf is read and hashed once and feeds both trees: its source's (checked claim by claim,
    naming the first range that differs, per source) and the log tree (naming the first
    checkpoint whose log tree differs).
    """
    leaves = leaves_of(rows)
    chain = [(item.checkpoint, report) for item, report in zip(stored, reports) if item.checkpoint is not None]
    claims: dict[str, list[tuple[int, SourceCoverage]]] = defaultdict(list)
    by_number: dict[int, CheckpointReport] = {}
    for checkpoint, report in chain:
        report.roots_match = True
        by_number[checkpoint.sequence] = report
        for source, coverage in checkpoint.sources.items():
            claims[source].append((checkpoint.sequence, coverage))
    sources = {source: _SourceClaims(source_claims) for source, source_claims in claims.items()}
    tree, log_failed, log_findings = LogFold(), False, list[tuple[CheckpointReport, Finding]]()
    last: Checkpoint | None = None

    def log_checked(checkpoint: Checkpoint) -> None:
        nonlocal log_failed
        signed = checkpoint.log
        if signed is None:
            return
        if log_failed:
            by_number[checkpoint.sequence].roots_match = False  # follows from the first
            return
        if tree.size != signed.tree_size or tree.root.hex() != signed.root \
                or tuple(n.hex() for n in tree.frontier) != signed.frontier:
            log_failed = True
            report = by_number[checkpoint.sequence]
            report.roots_match = False
            log_findings.append((report, Finding(
                LOG_MISMATCH, "error",
                f"checkpoint #{checkpoint.sequence}: the lake's {tree.size} events it covers do not hash to the log "
                f"tree root it signed over {signed.tree_size} events (origin {signed.origin}): events were changed, "
                "removed, added or moved", checkpoint=checkpoint.sequence)))

    for checkpoint, source, after, up_to in segments(checkpoint for checkpoint, _report in chain):
        if last is not None and checkpoint is not last:
            log_checked(last)
        last = checkpoint
        roots = sources[source]
        alone = roots.open and roots.restarts()
        if alone:  # a claim that covers less than the one before it: that source's tree starts over
            roots.size, roots.frontier = 0, []
            for chunk in leaves.between(source, -1, roots.claims[roots.next][1].last_offset):
                roots.extend(chunk)
        for chunk in leaves.between(source, after, up_to):
            tree.extend(chunk)
            if roots.open and not alone:
                roots.extend(chunk)
        if roots.open:
            roots.close_claim()
    if last is not None:
        log_checked(last)
    for source, roots in sources.items():
        if roots.mismatch is None:
            continue
        first, size = roots.mismatch
        source_claims = roots.claims
        for number, _coverage in source_claims[first:]:
            by_number[number].roots_match = False  # the later ones follow from the first
        number, coverage = source_claims[first]
        where = f"offsets {source_claims[first - 1][1].last_offset + 1}..{coverage.last_offset}" if first else \
            f"offsets up to {coverage.last_offset}"
        by_number[number].findings.append(Finding(
            MERKLE_MISMATCH, "error",
            f"checkpoint #{number}: the lake's {size} events of {source} in {where} do not hash to the root "
            f"signed over {coverage.tree_size} events: events there were changed, removed, added or moved",
            source=source, checkpoint=number))
    for report, finding in log_findings:
        report.findings.append(finding)


def check_heads(
    con: duckdb.DuckDBPyConnection, state: ChainState, operations: dict[str, OperationReport], files: list[str],
    only_operation: str | None = None,
) -> tuple[list[Finding], int]:
    """Signed chain heads and positions against the lake: deleted, truncated, rewritten, inserted, moved.

    Findings go to the operations' reports; returns the lake-level findings and the number of
    events no checkpoint covers yet.
    """
    heads = pa.table({
        "operation_id": pa.array(list(state.heads), pa.large_string()),
        "last_seq": pa.array([h.last_seq for _, h in state.heads.values()], pa.int64()),
        "head_hash": pa.array([h.head_hash for _, h in state.heads.values()], pa.large_string()),
        "closed": pa.array([h.closed for _, h in state.heads.values()], pa.bool_()),
        "checkpoint": pa.array([seq for seq, _ in state.heads.values()], pa.int64()),
    })
    coverage = pa.table({
        "source": pa.array(list(state.sources), pa.large_string()),
        "last_offset": pa.array([c.last_offset for _, c in state.sources.values()], pa.int64()),
    })
    try:  # ``rows`` is the skeleton of every row (``RowStore``): joined out of core, never held here
        for name, table in (("heads", heads), ("coverage", coverage)):
            con.register(name, table)
        con.execute("""
            CREATE OR REPLACE TEMP VIEW placed AS
            SELECT r.operation_id, r.seq, r.source, r.source_offset, r.file, h.last_seq, h.checkpoint,
                   coalesce(r.source_offset <= c.last_offset, false) AS covered
            FROM rows r LEFT JOIN coverage c USING (source) LEFT JOIN heads h USING (operation_id)""")
        unmatched = _query(con, """
            WITH lake_ops AS (SELECT operation_id, max(seq) AS lake_last FROM rows GROUP BY operation_id),
                 matched AS (SELECT DISTINCT r.operation_id FROM rows r JOIN heads h
                             ON r.operation_id = h.operation_id AND r.seq = h.last_seq AND r.hash = h.head_hash),
                 present AS (SELECT DISTINCT r.operation_id FROM rows r JOIN heads h
                             ON r.operation_id = h.operation_id AND r.seq = h.last_seq)
            SELECT h.*, o.lake_last, o.operation_id IS NULL AS deleted,
                   h.operation_id IN (SELECT operation_id FROM present) AS present
            FROM heads h LEFT JOIN lake_ops o USING (operation_id)
            WHERE h.operation_id NOT IN (SELECT operation_id FROM matched) AND (? IS NULL OR h.operation_id = ?)
            ORDER BY h.operation_id""", [only_operation, only_operation])
        misplaced = _query(con, """
            SELECT * FROM placed WHERE (covered AND (last_seq IS NULL OR seq > last_seq))
                                    OR (NOT covered AND seq <= last_seq)
            ORDER BY operation_id, seq""")
        uncovered = _query(con, "SELECT source, count(*) AS events FROM placed WHERE NOT covered "
                                "GROUP BY source ORDER BY source")
    finally:
        con.execute("DROP VIEW IF EXISTS placed")
        for name in ("heads", "coverage"):
            con.unregister(name)
    for head in unmatched:
        _head_finding(head, operations)
    for row in misplaced:
        _placement_finding(row, operations, files)
    not_covered = sum(u["events"] for u in uncovered)
    if not not_covered:
        return [], 0
    where = ", ".join(f"{u['events']} in {u['source']}" for u in uncovered[:5]) + (" ..." if len(uncovered) > 5 else "")
    return [Finding(NOT_COVERED, "warning", f"{not_covered} events are newer than the latest checkpoint ({where}): "
                    "not signed yet. The materializer signs them at its next checkpoint "
                    "(`secureml-audit materialize --once`)")], not_covered


def _query(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    return con.sql(sql, params=params).to_arrow_table().to_pylist()


def _report(operations: dict[str, OperationReport], operation_id: str) -> OperationReport:
    if operation_id not in operations:  # signed, yet no event of it is left in the lake
        operations[operation_id] = OperationReport(operation_id, None, 0, None, False)
    return operations[operation_id]


def _head_finding(head: dict[str, Any], operations: dict[str, OperationReport]) -> None:
    """The lake does not hold the chain head a checkpoint signed for an operation."""
    op, last, number = head["operation_id"], head["last_seq"], head["checkpoint"]
    signed = f"checkpoint #{number} signed its chain up to seq {last}{' (closed)' if head['closed'] else ''}"
    if head["deleted"]:
        kind, message = DELETED_OPERATION, f"{op}: deleted from the lake: {signed}, and no event of it is left"
    elif head["lake_last"] < last:
        kind, message = TRUNCATED, f"{op}: truncated: {signed}, but the lake ends at seq {head['lake_last']}"
    elif not head["present"]:
        kind, message = MISSING, f"{op}: {signed}, but that event is gone from the lake"
    else:
        kind, message = MODIFIED, (f"{op}: {signed}, but the lake's event at seq {last} has another hash: "
                                   "the chain was rewritten with recomputed hashes")
    _report(operations, op).findings.append(Finding(kind, "error", message, op, (last,), checkpoint=number))


def _placement_finding(row: dict[str, Any], operations: dict[str, OperationReport], files: list[str]) -> None:
    """A row inside signed positions that no checkpoint signed, or a signed event outside them."""
    op, seq, where = row["operation_id"], row["seq"], f"{row['source']} offset {row['source_offset']}"
    if row["covered"]:
        kind = FOREIGN
        message = (f"{op}: the event at seq {seq} ({where}) lies inside signed positions, yet no checkpoint "
                   "signed it: it was inserted")
    else:
        kind = MISPLACED
        message = (f"{op}: the event at seq {seq} lies at {where}, outside the positions signed for it "
                   f"(checkpoint #{row['checkpoint']} covers its chain up to seq {row['last_seq']}): it was moved")
    _report(operations, op).findings.append(
        Finding(kind, "error", message, op, (seq,), source=row["source"], files=(files[row["file"]],)))
