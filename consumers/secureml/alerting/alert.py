"""An alert, the events that trigger it, its deterministic id, and its Avro and JSON forms."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from secureml.audit.privacy.detectors import redact
from secureml.audit.schema import schema_dirs
from secureml.audit.timeutil import micros_to_iso

ALERT_SCHEMA_FILE = "audit_alert.v1.avsc"
ALERT_SCHEMA_VERSION = 1
SEVERITIES = ("low", "medium", "high", "critical")


@dataclass(frozen=True)
class Trigger:
    """An audit event that caused an alert, and where it is stored (so the alert can be proven from the log)."""

    operation_id: str
    seq: int
    event_id: str
    source: str  # "<topic>/<partition>" or "log/<segment>"
    position: int  # Kafka offset, or byte offset in the segment

    def to_dict(self) -> dict[str, Any]:
        """JSON form (also how rules keep triggers in their state)."""
        return {"operation_id": self.operation_id, "seq": self.seq, "event_id": self.event_id,
                "source": self.source, "position": self.position}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trigger:
        """Inverse of to_dict."""
        return cls(str(data["operation_id"]), int(data["seq"]), str(data["event_id"]), str(data["source"]),
                   int(data["position"]))


def alert_id(rule_id: str, identity: Iterable[str]) -> str:
    """SHA-256 hex of the rule id and the alert's identity parts: equal inputs, equal ids, on every run."""
    return hashlib.sha256("\x1f".join((rule_id, *identity)).encode()).hexdigest()


@dataclass(frozen=True)
class Alert:
    """One compliance alert: which rule, how serious, the legal basis, a sentence, and its proof."""

    alert_id: str
    rule_id: str
    severity: str
    regulation: str
    article: str
    message: str
    operation_id: str
    created_at: int  # UTC micros
    event_time: int  # UTC micros of the triggering event, or of the deadline
    triggers: tuple[Trigger, ...]
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Whatever a rule quotes, an alert's sentence carries no e-mail, SSN, card, IBAN or phone number.
        object.__setattr__(self, "message", redact(self.message))

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as written to the sinks and the embedded alerts file (times as ISO 8601 UTC)."""
        return {
            "alert_id": self.alert_id, "rule_id": self.rule_id, "severity": self.severity,
            "regulation": self.regulation, "article": self.article, "message": self.message,
            "operation_id": self.operation_id, "created_at": micros_to_iso(self.created_at),
            "event_time": micros_to_iso(self.event_time), "triggers": [t.to_dict() for t in self.triggers],
            "details": self.details,
        }

    def to_avro(self) -> bytes:
        """Schemaless Avro encoding (schemas/audit_alert.v1.avsc), as published to the alerts topic."""
        import fastavro

        record = {**self.to_dict(), "created_at": self.created_at, "event_time": self.event_time,
                  "details": json.dumps(self.details, sort_keys=True, default=str)}
        out = io.BytesIO()
        fastavro.schemaless_writer(out, _parsed_schema(), record)
        return out.getvalue()

    @classmethod
    def from_avro(cls, message: bytes) -> Alert:
        """Decode a message of the alerts topic."""
        import fastavro

        record = fastavro.schemaless_reader(io.BytesIO(message), _parsed_schema(), None)
        assert isinstance(record, dict)
        return cls(
            **{**record, "triggers": tuple(Trigger.from_dict(t) for t in record["triggers"]),
               "details": json.loads(record["details"])},
        )


@cache
def load_alert_schema() -> dict[str, Any]:
    """The parsed JSON of schemas/audit_alert.v1.avsc."""
    for directory in schema_dirs():
        path = directory / ALERT_SCHEMA_FILE
        if path.is_file():
            schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            return schema
    raise FileNotFoundError(f"Avro schema {ALERT_SCHEMA_FILE} not found; reinstall secureml-audit")


@cache
def _parsed_schema() -> Any:
    import fastavro

    schema = load_alert_schema()
    # Timestamps stay integer microseconds both ways (same bytes as the logical type).
    plain = [{**f, "type": f["type"]["type"]} if isinstance(f["type"], dict) and "logicalType" in f["type"] else f
             for f in schema["fields"]]
    return fastavro.parse_schema({**schema, "fields": plain})
