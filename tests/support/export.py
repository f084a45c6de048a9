"""Export tests: a realistic trail, the documented required fields of OCSF and OpenLineage as JSON Schemas,
and a real local HTTP server (stdlib) that can fail before it recovers.

No package ships the published OCSF or OpenLineage JSON schemas (openlineage-python carries
generated classes, py-ocsf-models only the findings classes), so the schemas below state the
fields the specifications require: OpenLineage 2-0-2 ``RunEvent`` (eventTime, producer,
schemaURL, run.runId as a UUID, job.namespace/name, eventType, datasets' namespace/name,
facets' _producer/_schemaURL) and OCSF 1.3 (the base event's required attributes, plus
those of API Activity, Datastore Activity, Application Lifecycle and Compliance Finding).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jsonschema

from secureml.audit import AuditTrail

_FACET = {"type": "object", "required": ["_producer", "_schemaURL"],
          "properties": {"_producer": {"type": "string", "minLength": 1}, "_schemaURL": {"type": "string",
                                                                                      "pattern": "^https?://"}}}
_DATASET = {"type": "object", "required": ["namespace", "name"],
            "properties": {"namespace": {"type": "string", "minLength": 1}, "name": {"type": "string", "minLength": 1},
                           "facets": {"type": "object", "additionalProperties": _FACET},
                           "inputFacets": {"type": "object", "additionalProperties": _FACET},
                           "outputFacets": {"type": "object", "additionalProperties": _FACET}}}
OPENLINEAGE_RUN_EVENT: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["eventTime", "producer", "schemaURL", "run", "job"],
    "properties": {
        "eventType": {"enum": ["START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"]},
        "eventTime": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$"},
        "producer": {"type": "string", "pattern": "^https?://"},
        "schemaURL": {"type": "string", "pattern": "^https://openlineage.io/spec/"},
        "run": {"type": "object", "required": ["runId"],
                "properties": {"runId": {"type": "string", "format": "uuid"},
                               "facets": {"type": "object", "additionalProperties": _FACET}}},
        "job": {"type": "object", "required": ["namespace", "name"],
                "properties": {"namespace": {"type": "string", "minLength": 1}, "name": {"type": "string"},
                               "facets": {"type": "object", "additionalProperties": _FACET}}},
        "inputs": {"type": "array", "items": _DATASET},
        "outputs": {"type": "array", "items": _DATASET},
    },
}

_INT = {"type": "integer"}
OCSF_BASE: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["activity_id", "category_uid", "class_uid", "type_uid", "severity_id", "time", "metadata"],
    "properties": {
        "activity_id": {"type": "integer", "enum": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 99]},
        "category_uid": {"enum": [2, 6]},
        "class_uid": {"enum": [2003, 6002, 6003, 6005]},
        "type_uid": _INT,
        "severity_id": {"enum": [0, 1, 2, 3, 4, 5, 6, 99]},
        "status_id": {"enum": [0, 1, 2, 3, 4, 99]},
        "time": {"type": "integer", "minimum": 0},
        "metadata": {"type": "object", "required": ["version", "product"],
                     "properties": {"version": {"type": "string", "pattern": r"^1\.\d+\.\d+$"},
                                    "product": {"type": "object", "required": ["vendor_name", "name"]},
                                    "uid": {"type": "string"}}},
        "actor": {"type": "object", "minProperties": 1},
        "unmapped": {"type": "object"},
    },
}
# Required attributes of each class, beyond the base event's.
OCSF_CLASS_REQUIRED = {
    6003: ["actor", "api", "src_endpoint"],  # API Activity
    6005: ["actor", "api", "src_endpoint"],  # Datastore Activity
    6002: ["app"],  # Application Lifecycle
    2003: ["compliance", "finding_info"],  # Compliance Finding
}
_OCSF_OBJECTS = {
    "api": {"type": "object", "required": ["operation"]},
    "app": {"type": "object", "required": ["name"]},
    "compliance": {"type": "object", "required": ["standards"],
                   "properties": {"standards": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                                  "status_id": {"enum": [0, 1, 2, 3, 99]}}},
    "finding_info": {"type": "object", "required": ["uid", "title"]},
    "src_endpoint": {"type": "object", "minProperties": 1},
}


def validate_openlineage(record: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError unless the record has every field an OpenLineage RunEvent requires."""
    jsonschema.Draft202012Validator(OPENLINEAGE_RUN_EVENT, format_checker=jsonschema.FormatChecker()).validate(record)


def validate_ocsf(record: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError unless the record has the OCSF base and class required attributes."""
    required = OCSF_CLASS_REQUIRED[record["class_uid"]]
    schema = {**OCSF_BASE, "required": OCSF_BASE["required"] + required,
              "properties": {**OCSF_BASE["properties"], **{k: v for k, v in _OCSF_OBJECTS.items() if k in required}}}
    jsonschema.Draft202012Validator(schema).validate(record)
    assert record["type_uid"] == record["class_uid"] * 100 + record["activity_id"], record


def log_trail(options: dict[str, Any], *, inferences: int = 3, status: str = "completed") -> str:
    """One credit-risk operation of every kind of event; returns its operation id."""
    trail = AuditTrail("credit_risk_model_training", regulations=["GDPR", "CCPA"], user="analyst_123", **options)
    trail.log_data_access(dataset_name="customer_financial_data", columns_accessed=["income", "age"],
                          num_records=5000, purpose="model_training")
    trail.log_data_transformation(transformation_type="anonymization", input_data="customer_financial_data",
                                  output_data="anonymized_financial_data", parameters={"k": 5})
    trail.log_model_training(model_type="RandomForest", dataset_name="anonymized_financial_data",
                             parameters={"n_estimators": 100}, metrics={"accuracy": 0.91})
    for i in range(inferences):
        trail.log_model_inference(model_id="credit_risk_v1", input_data=f"application_{i}", output="low_risk",
                                  confidence=0.8)
    trail.log_compliance_check(check_type="purpose_limitation", regulation="GDPR", result=False,
                               details={"reason": "no purpose"})
    trail.log_user_request(request_type="erasure", user_id="customer_42", details=None, status="completed")
    trail.log_error(error_type="ValueError", message="bad row")
    trail.log_event("model_review", {"reviewer": "risk_team"})
    operation_id = trail.operation_id
    trail.close(status=status)
    return operation_id


@dataclass
class Received:
    """What the test HTTP server got: bodies (parsed JSON) and their Idempotency-Key headers."""

    bodies: list[Any] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    failures_left: int = 0
    status: int = 503
    lock: threading.Lock = field(default_factory=threading.Lock)

    def records(self) -> list[dict[str, Any]]:
        """Every record of every accepted body."""
        out: list[dict[str, Any]] = []
        for body in self.bodies:
            out.extend(body if isinstance(body, list) else [body])
        return out


@contextmanager
def http_receiver(failures: int = 0, status: int = 503) -> Iterator[tuple[str, Received]]:
    """A real HTTP server on 127.0.0.1 that answers ``status`` to the first ``failures`` POSTs, then 200."""
    received = Received(failures_left=failures, status=status)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with received.lock:
                if received.failures_left != 0:
                    received.failures_left -= 1
                    received.keys.append(self.headers.get("Idempotency-Key", ""))
                    self.send_response(received.status)
                    self.end_headers()
                    return
                received.bodies.append(json.loads(body))
                received.keys.append(self.headers.get("Idempotency-Key", ""))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/v1/lineage", received
    finally:
        server.shutdown()
        server.server_close()
