"""What verification found: findings located by operation, seq, source, file and checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["error", "warning"]

# Kinds of findings. Errors: the lake is not what was logged and signed. Warnings: not proven (yet).
MODIFIED = "modified"  # an event's content no longer matches its hash, or a hash was recomputed
MISSING = "missing"  # seqs absent from an operation's chain (gap)
REORDERED = "reordered"  # an event links to another event than the one before it
FOREIGN = "foreign"  # an event no producer logged and no checkpoint signed (inserted, forged)
TRUNCATED = "truncated"  # the lake ends before the head a checkpoint signed
DELETED_OPERATION = "deleted_operation"  # a signed operation has no event left in the lake
MISPLACED = "misplaced"  # an event sits outside the positions that were signed for it
LOG_DELETED = "log_deleted"  # an embedded log segment the lake read from is gone
LOG_TRUNCATED = "log_truncated"  # an embedded log segment is shorter than what the lake read from it
LOG_ABSENT = "log_absent"  # warning: the embedded log is not beside the lake (a copy?), so it was not compared
FILE_MISSING = "file_missing"  # a file the manifest lists is gone or unreadable
MERKLE_MISMATCH = "merkle_mismatch"  # a source's rows do not hash to the signed root
LOG_MISMATCH = "log_tree_mismatch"  # the lake's rows do not hash to a checkpoint's log tree root
NOT_WITNESSED = "not_witnessed"  # the latest checkpoint lacks the cosignatures asked for
ROLLED_BACK = "rolled_back"  # a witness cosigned more of the log than the lake's checkpoints hold
NOTE_INVALID = "note_invalid"  # a checkpoint's C2SP note is missing, altered, or disagrees with it
SIGNATURE_INVALID = "signature_invalid"
CHAIN_BROKEN = "checkpoint_chain_broken"  # a checkpoint is missing or does not link to the previous one
CHECKPOINT_UNREADABLE = "checkpoint_unreadable"
NO_PUBLIC_KEY = "no_public_key"
NO_CHECKPOINT = "no_checkpoint"  # an error only when a public key was given
NOT_CLOSED = "not_closed"  # warning: the operation never logged audit_closed
NOT_COVERED = "not_covered"  # warning: events newer than the latest checkpoint
UNTRUSTED_KEY = "untrusted_key"  # warning: signatures checked with the lake's own copy of the key


@dataclass(frozen=True)
class Finding:
    """One thing verification found, and where."""

    kind: str
    severity: Severity
    message: str
    operation_id: str | None = None
    seqs: tuple[int, ...] = ()
    source: str | None = None
    files: tuple[str, ...] = ()
    checkpoint: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form, without empty fields."""
        raw = {"kind": self.kind, "severity": self.severity, "message": self.message,
               "operation_id": self.operation_id, "seqs": list(self.seqs), "source": self.source,
               "files": list(self.files), "checkpoint": self.checkpoint}
        return {k: v for k, v in raw.items() if v not in (None, [], ())}


def _status(findings: list[Finding]) -> str:
    if any(f.severity == "error" for f in findings):
        return "failed"
    return "warning" if findings else "intact"


@dataclass
class OperationReport:
    """Verification of one operation's hash chain."""

    operation_id: str
    operation_name: str | None
    events: int
    last_seq: int | None
    closed: bool
    findings: list[Finding] = field(default_factory=list)

    @property
    def status(self) -> str:
        """'intact', 'warning' (e.g. never closed) or 'failed'."""
        return _status(self.findings)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"operation_id": self.operation_id, "operation_name": self.operation_name, "status": self.status,
                "events": self.events, "last_seq": self.last_seq, "closed": self.closed,
                "findings": [f.to_dict() for f in self.findings]}


@dataclass
class CheckpointReport:
    """Verification of one signed checkpoint."""

    name: str
    sequence: int | None
    created_at: str | None
    key_id: str | None
    signature_valid: bool = False
    chain_intact: bool = False
    roots_match: bool | None = None  # None: not checked (one operation was verified)
    findings: list[Finding] = field(default_factory=list)

    @property
    def status(self) -> str:
        """'intact' or 'failed' (a root that fails only because an earlier one did carries no finding)."""
        return "failed" if self.roots_match is False else _status(self.findings)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"name": self.name, "sequence": self.sequence, "created_at": self.created_at, "key_id": self.key_id,
                "status": self.status, "signature_valid": self.signature_valid, "chain_intact": self.chain_intact,
                "roots_match": self.roots_match, "findings": [f.to_dict() for f in self.findings]}


@dataclass
class VerificationResult:
    """Everything ``verify`` found about a lake; ``ok`` only when nothing is wrong."""

    log_dir: str
    events: int
    operations: list[OperationReport]
    checkpoints: list[CheckpointReport]
    findings: list[Finding]  # about the lake as a whole (files, sources, keys, coverage)
    public_key: str  # where the key that checked the signatures came from
    events_not_covered: int = 0
    witnessed: str = "not checked"  # what was checked of witness cosignatures, in one line
    seconds: float = 0.0
    expired_events: int = 0  # events gone from the lake under valid retention records
    retention: list[str] = field(default_factory=list)  # one line per retention record that vouched for them
    subjects_erased: int = 0  # subject_erased events: crypto-shredded subjects, whose events stay intact

    def all_findings(self) -> list[Finding]:
        """Findings of the lake, then of every operation, then of every checkpoint."""
        return (self.findings + [f for op in self.operations for f in op.findings]
                + [f for c in self.checkpoints for f in c.findings])

    @property
    def errors(self) -> list[Finding]:
        """Findings that make verification fail."""
        return [f for f in self.all_findings() if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        """Findings that do not (never closed, not yet covered, untrusted key)."""
        return [f for f in self.all_findings() if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when every event, chain and checkpoint checked out."""
        return not self.errors

    @property
    def signed(self) -> bool:
        """True when signed checkpoints were checked: without one, intact chains prove nothing against
        whoever rewrote them consistently or deleted whole operations."""
        return bool(self.checkpoints)

    @property
    def verdict(self) -> str:
        """'intact' (and signed), 'intact, not signed', or 'FAILED': what may honestly be claimed."""
        if not self.ok:
            return "FAILED"
        return "intact" if self.signed else "intact, not signed"

    def operation(self, operation_id: str) -> OperationReport | None:
        """The report of one operation."""
        return next((op for op in self.operations if op.operation_id == operation_id), None)

    def summary(self) -> dict[str, Any]:
        """Headline numbers, flat, for reports and dashboards."""
        latest = self.checkpoints[-1] if self.checkpoints else None
        return {
            "status": self.verdict,
            "events": self.events,
            "operations": len(self.operations),
            "operations_failed": sum(op.status == "failed" for op in self.operations),
            "operations_not_closed": sum(not op.closed and op.events > 0 for op in self.operations),
            "checkpoints": len(self.checkpoints),
            "checkpoints_failed": sum(c.status == "failed" for c in self.checkpoints),
            "latest_checkpoint": f"#{latest.sequence} at {latest.created_at}" if latest else "none",
            "events_not_covered": self.events_not_covered,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "public_key": self.public_key,
            "witnessed": self.witnessed,
            "expired_events": self.expired_events,
            "subjects_erased": self.subjects_erased,
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything, as JSON values."""
        return {
            "ok": self.ok, "signed": self.signed, "log_dir": self.log_dir, "seconds": round(self.seconds, 3),
            "summary": self.summary(),
            "findings": [f.to_dict() for f in self.findings],
            "retention": self.retention,
            "operations": [op.to_dict() for op in self.operations],
            "checkpoints": [c.to_dict() for c in self.checkpoints],
        }
