"""Output formats: each turns one event dict into zero or more output records.

- ``jsonl``: the event dict itself (the fields of ``get_audit_logs``).
- ``ocsf``: an OCSF 1.3 event of the closest activity class (docs/exports.md has the mapping).
- ``openlineage``: OpenLineage RunEvents (job = operation, run = operation_id) for the events
  that say something about lineage: start and end of an operation, data read, data written,
  models trained. The others (inferences, checks, calls) produce no record.

A record carries a key (the operation id: related records share a Kafka partition and stay
in order) and a stable id (the event id, suffixed when one event gives several records) that
HTTP receivers can deduplicate on.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from secureml.audit.version import __version__

FORMATS = ("jsonl", "ocsf", "openlineage")
OCSF_VERSION = "1.3.0"
OPENLINEAGE_SCHEMA = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
PRODUCER = f"https://pypi.org/project/secureml-audit/{__version__}"
FACET_SCHEMA = "https://openlineage.io/spec/facets/1-0-0/{name}.json#/$defs/{name}"
NAMESPACE = "secureml-audit"


@dataclass(frozen=True)
class Record:
    """One output record: its partitioning key, a stable id for deduplication, and its JSON value."""

    key: str
    id: str
    value: dict[str, Any]

    def json(self) -> bytes:
        """The value as compact UTF-8 JSON (one line)."""
        return _ENCODER.encode(self.value).encode()


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str)


# -- JSONL -------------------------------------------------------------------------------------


def to_jsonl(event: dict[str, Any]) -> list[Record]:
    """The event dict as it is."""
    return [Record(event["operation_id"], event["event_id"], event)]


# -- OCSF --------------------------------------------------------------------------------------

API_ACTIVITY, DATASTORE_ACTIVITY, APPLICATION_LIFECYCLE, COMPLIANCE_FINDING = 6003, 6005, 6002, 2003
_CLASS = {
    API_ACTIVITY: ("API Activity", 6, "Application Activity"),
    DATASTORE_ACTIVITY: ("Datastore Activity", 6, "Application Activity"),
    APPLICATION_LIFECYCLE: ("Application Lifecycle", 6, "Application Activity"),
    COMPLIANCE_FINDING: ("Compliance Finding", 2, "Findings"),
}
# event type -> (class_uid, activity_id, activity name)
OCSF_ACTIVITY: dict[str, tuple[int, int, str]] = {
    "audit_started": (APPLICATION_LIFECYCLE, 3, "Start"),
    "audit_closed": (APPLICATION_LIFECYCLE, 4, "Stop"),
    "data_access": (DATASTORE_ACTIVITY, 1, "Read"),
    "data_transformation": (DATASTORE_ACTIVITY, 5, "Write"),
    "model_training": (API_ACTIVITY, 1, "Create"),
    "model_inference": (API_ACTIVITY, 2, "Read"),
    "compliance_check": (COMPLIANCE_FINDING, 1, "Create"),
    "function_call": (API_ACTIVITY, 99, "Call"),
    "function_return": (API_ACTIVITY, 99, "Return"),
    "error": (API_ACTIVITY, 99, "Error"),
}
CUSTOM_ACTIVITY = (API_ACTIVITY, 99, "Other")
# A data-subject request acts on the subject's records in a datastore: read them, change them, erase them.
_REQUEST_ACTIVITY = {"access": (1, "Read"), "portability": (1, "Read"), "rectification": (2, "Update"),
                     "erasure": (7, "Delete"), "deletion": (7, "Delete"), "delete": (7, "Delete")}
_SUCCESS, _FAILURE = 1, 2
_FAILED_WORDS = ("fail", "error", "violation", "non_compliant", "noncompliant", "rejected", "denied")
# Fields each class maps into its own objects; every other payload field goes to ``unmapped``.
_MAPPED = {"dataset_name", "model_id", "model_type", "check_type", "regulation", "result", "function_name",
           "module", "status", "message", "error_type", "request_type"}


def _severity(level: int) -> int:
    """Python logging level -> OCSF severity_id (1 Informational, 3 Medium, 4 High, 5 Critical)."""
    if level >= 50:
        return 5
    if level >= 40:
        return 4
    if level >= 30:
        return 3
    return 1


def _failed(value: object) -> bool:
    """Whether a status or check result says it failed: False, a failing word, or ``{"passed": false}``."""
    if value is False:
        return True
    if isinstance(value, dict):
        return any(value.get(key) is False for key in ("passed", "compliant", "success", "ok"))
    return isinstance(value, str) and any(word in value.lower() for word in _FAILED_WORDS)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS = dt.timedelta(milliseconds=1)


def _epoch_ms(timestamp: str) -> int:
    return (dt.datetime.fromisoformat(timestamp) - _EPOCH) // _MS


_ENVELOPE = {"schema_version", "event_id", "operation_id", "operation_name", "operation_start", "seq", "event_type",
             "level", "timestamp", "user", "regulations", "context", "producer_host", "producer_pid",
             "producer_version", "prev_hash", "hash"}
_NOT_UNMAPPED = _ENVELOPE | _MAPPED


def to_ocsf(event: dict[str, Any]) -> list[Record]:
    """One OCSF event of the closest class (see docs/exports.md for the mapping and the reasons)."""
    event_type = event["event_type"]
    class_uid, activity_id, activity = OCSF_ACTIVITY.get(event_type, CUSTOM_ACTIVITY)
    if event_type == "user_request":
        class_uid = DATASTORE_ACTIVITY
        activity_id, activity = _REQUEST_ACTIVITY.get(str(event.get("request_type", "")).lower(), (99, "Other"))
    class_name, category_uid, category_name = _CLASS[class_uid]
    status_text = event.get("status") if event.get("status") is not None else event.get("result")
    failed = event_type == "error" or _failed(status_text)
    out: dict[str, Any] = {
        "class_uid": class_uid,
        "class_name": class_name,
        "category_uid": category_uid,
        "category_name": category_name,
        "activity_id": activity_id,
        "activity_name": activity,
        "type_uid": class_uid * 100 + activity_id,
        "type_name": f"{class_name}: {activity}",
        "time": _epoch_ms(event["timestamp"]),
        "severity_id": _severity(int(event["level"])),
        "status_id": _FAILURE if failed else _SUCCESS,
        "status": "Failure" if failed else "Success",
        "message": f"{event['operation_name']}: {event_type}",
        "metadata": {
            "version": OCSF_VERSION,
            "uid": event["event_id"],
            "correlation_uid": event["operation_id"],
            "sequence": event["seq"],
            "log_name": NAMESPACE,
            "product": {"name": NAMESPACE, "vendor_name": "SecureML", "version": event["producer_version"]},
            "labels": list(event.get("regulations") or []),
        },
        "actor": {"user": {"name": event["user"]}} if event.get("user") else {"app_name": event["operation_name"]},
        "src_endpoint": {"hostname": event["producer_host"]},
        "api": {"operation": event_type, "service": {"name": event["operation_name"]}},
        "unmapped": {
            "event_type": event_type, "operation_name": event["operation_name"], "seq": event["seq"],
            "context": event.get("context"), "hash": event["hash"], "prev_hash": event["prev_hash"],
            **{k: v for k, v in event.items() if k not in _NOT_UNMAPPED and v is not None},
        },
    }
    if status_text is not None:
        out["status_detail"] = status_text if isinstance(status_text, str) else json.dumps(status_text, default=str)
    if class_uid == DATASTORE_ACTIVITY:
        name = event.get("dataset_name") or event.get("output_data") or event.get("input_data") or event.get(
            "user_id") or "unknown"
        out["database"] = {"name": str(name), "type_id": 99, "type": "Dataset"}
    elif class_uid == APPLICATION_LIFECYCLE:
        out["app"] = {"name": event["operation_name"], "uid": event["operation_id"],
                      "version": event["producer_version"]}
    elif class_uid == COMPLIANCE_FINDING:
        regulation = event.get("regulation") or "unspecified"
        out["finding_info"] = {"uid": event["event_id"], "title": str(event.get("check_type") or "compliance check"),
                               "types": [regulation]}
        out["compliance"] = {"standards": [regulation], "control": event.get("check_type"),
                             "status": "Fail" if failed else "Pass", "status_id": 3 if failed else 1}
        # A finding's status is its triage state (1 New), not the outcome: that is compliance.status_id.
        out["status_id"], out["status"] = 1, "New"
    else:
        resource = event.get("model_id") or event.get("function_name") or event.get("error_type")
        if resource is not None:
            out["resources"] = [{"name": str(resource), "type": "model" if event.get("model_id") else "function"}]
    return [Record(event["operation_id"], event["event_id"], out)]


# -- OpenLineage -------------------------------------------------------------------------------


def _run_id(operation_id: str) -> str:
    """A run id (a UUID, as the spec requires) that is the operation id, or derived from it stably."""
    try:
        return str(uuid.UUID(operation_id))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"secureml-audit:{operation_id}"))


def _facet(name: str, **fields: Any) -> dict[str, Any]:
    return {"_producer": PRODUCER, "_schemaURL": FACET_SCHEMA.format(name=name), **fields}


def _dataset(name: object, namespace: str = NAMESPACE) -> dict[str, Any]:
    return {"namespace": namespace, "name": str(name)}


def _names(value: object) -> list[str]:
    """Dataset names in a field: a name, a list of names, or a dict naming them (``{"dataset": ...}``)."""
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value if v is not None]
    if isinstance(value, dict):
        for key in ("dataset", "dataset_name", "name", "table", "path"):
            if key in value:
                return [str(value[key])]
        return []
    return [str(value)]


def _lineage(event: dict[str, Any]) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]] | None:
    """(eventType, inputs, outputs) of an event that tells lineage, else None."""
    event_type = event["event_type"]
    if event_type == "audit_started":
        return "START", [], []
    if event_type == "audit_closed":
        status = str(event.get("status") or "completed").lower()
        return ("FAIL" if _failed(status) else "ABORT" if status in ("aborted", "cancelled") else "COMPLETE"), [], []
    if event_type == "data_access":
        dataset = _dataset(event["dataset_name"])
        columns = event.get("columns_accessed") or []
        if columns:
            dataset["facets"] = {"schema": _facet("SchemaDatasetFacet", fields=[{"name": c} for c in columns])}
        if event.get("num_records") is not None:
            dataset["inputFacets"] = {"inputStatistics": _facet("InputStatisticsInputDatasetFacet",
                                                                rowCount=event["num_records"])}
        return "RUNNING", [dataset], []
    if event_type == "data_transformation":
        inputs = [_dataset(n) for n in _names(event.get("input_data"))]
        outputs = [_dataset(n) for n in _names(event.get("output_data"))]
        return ("RUNNING", inputs, outputs) if inputs or outputs else None
    if event_type == "model_training":
        inputs = [_dataset(n) for n in _names(event.get("dataset_name"))]
        model = event.get("model_type") or "model"
        return "RUNNING", inputs, [_dataset(f"{event['operation_name']}/{model}", f"{NAMESPACE}.models")]
    return None


def to_openlineage(event: dict[str, Any]) -> list[Record]:
    """A RunEvent for start, end, data read/written and training; nothing for the other event types."""
    lineage = _lineage(event)
    if lineage is None:
        return []
    event_type, inputs, outputs = lineage
    run_facets: dict[str, Any] = {
        "secureml_audit": _facet("SecuremlAuditRunFacet", operation_id=event["operation_id"],
                                 event_id=event["event_id"], seq=event["seq"], hash=event["hash"],
                                 regulations=list(event.get("regulations") or [])),
    }
    if event_type == "FAIL":
        run_facets["errorMessage"] = _facet("ErrorMessageRunFacet", message=str(event.get("status")),
                                            programmingLanguage="python")
    if event["event_type"] == "model_training":
        run_facets["secureml_audit"]["parameters"] = event.get("parameters")
        run_facets["secureml_audit"]["metrics"] = event.get("metrics")
    value = {
        "eventType": event_type,
        "eventTime": event["timestamp"],
        "producer": PRODUCER,
        "schemaURL": OPENLINEAGE_SCHEMA,
        "run": {"runId": _run_id(event["operation_id"]), "facets": run_facets},
        "job": {"namespace": NAMESPACE, "name": event["operation_name"],
                "facets": {"jobType": _facet("JobTypeJobFacet", processingType="BATCH", integration="SECUREML_AUDIT",
                                             jobType="JOB")}},
        "inputs": inputs,
        "outputs": outputs,
    }
    return [Record(event["operation_id"], event["event_id"], value)]


TRANSFORMS: dict[str, Callable[[dict[str, Any]], list[Record]]] = {
    "jsonl": to_jsonl, "ocsf": to_ocsf, "openlineage": to_openlineage,
}


def render(format_name: str, events: list[dict[str, Any]]) -> list[Record]:
    """Every record the events give in a format, in event order."""
    transform = TRANSFORMS[format_name]
    return [record for event in events for record in transform(event)]
