"""Bad arguments raise an error that names the field and the rule, and nothing of the call is recorded."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import Harness
from secureml.audit import AuditTrail, AuditValidationError, count_events, get_audit_logs

GOOD: dict[str, dict[str, Any]] = {
    "log_data_access": dict(dataset_name="d", columns_accessed=["a"], num_records=1, purpose="p"),
    "log_data_transformation": dict(transformation_type="t", input_data="i", output_data="o", parameters={}),
    "log_model_training": dict(model_type="m", dataset_name="d", parameters={}),
    "log_model_inference": dict(model_id="m", input_data="i", output=1, confidence=0.5),
    "log_compliance_check": dict(check_type="c", regulation="GDPR", result=True, details={}),
    "log_user_request": dict(request_type="r", user_id="u", details={}, status="open"),
    "log_error": dict(error_type="E", message="m"),
}

BAD = [
    ("log_data_access", "dataset_name", "", "must not be empty"),
    ("log_data_access", "dataset_name", 5, "must be a string"),
    ("log_data_access", "columns_accessed", "income", "list of strings"),
    ("log_data_access", "columns_accessed", ["a", 3], "non-empty string"),
    ("log_data_access", "num_records", -1, ">= 0"),
    ("log_data_access", "num_records", 2.5, "integer"),
    ("log_data_access", "num_records", True, "integer"),
    ("log_data_access", "purpose", "  ", "must not be empty"),
    ("log_data_access", "user", "", "must not be empty"),
    ("log_data_transformation", "parameters", [1, 2], "must be a dict"),
    ("log_data_transformation", "parameters", {"f": object()}, "JSON-serialisable"),
    ("log_data_transformation", "parameters", {1: "x"}, "keys must be strings"),
    ("log_model_training", "metrics", "0.9", "must be a dict"),
    ("log_model_training", "model_type", None, "must be a string"),
    ("log_model_inference", "confidence", 1.5, "within [0, 1]"),
    ("log_model_inference", "confidence", -0.1, "within [0, 1]"),
    ("log_model_inference", "confidence", float("nan"), "within [0, 1]"),
    ("log_model_inference", "confidence", "high", "number in [0, 1]"),
    ("log_model_inference", "input_data", [0.1, 0.2], "must be a string"),
    ("log_model_inference", "output", {1, object()}, "JSON-serialisable"),
    ("log_compliance_check", "result", "yes", "True or False"),
    ("log_compliance_check", "result", 1, "True or False"),
    ("log_compliance_check", "regulation", "", "must not be empty"),
    ("log_user_request", "status", "", "must not be empty"),
    ("log_user_request", "user_id", 12345, "must be a string"),
    ("log_error", "details", "oops", "must be a dict"),
]


@pytest.mark.parametrize(
    ("method", "field", "value", "rule"), BAD, ids=[f"{m}-{f}-{i}" for i, (m, f, _, _) in enumerate(BAD)]
)
def test_rejected_argument_names_field_and_records_nothing(
    embedded: Harness, method: str, field: str, value: Any, rule: str
) -> None:
    """Each bad argument raises AuditValidationError naming the field; the trail is unchanged."""
    trail = AuditTrail("validation", **embedded.options())
    before = count_events(embedded.log_dir)
    with pytest.raises(AuditValidationError) as caught:
        getattr(trail, method)(**{**GOOD[method], field: value})
    assert caught.value.field == field or caught.value.field.startswith(field + "[")
    assert field in str(caught.value) and rule in str(caught.value) and method in str(caught.value)
    assert count_events(embedded.log_dir) == before
    getattr(trail, method)(**GOOD[method])  # the trail goes on, gapless
    trail.close()
    logs = get_audit_logs(operation_id=trail.operation_id, log_dir=embedded.log_dir)
    assert [log["seq"] for log in logs] == [0, 1, 2]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"operation_name": ""}, "operation_name"),
        ({"operation_name": None}, "operation_name"),
        ({"operation_name": "x", "log_level": -5}, "log_level"),
        ({"operation_name": "x", "log_level": "LOUD"}, "log_level"),
        ({"operation_name": "x", "context": ["a"]}, "context"),
        ({"operation_name": "x", "regulations": "GDPR"}, "regulations"),
        ({"operation_name": "x", "user": ""}, "user"),
    ],
)
def test_rejected_constructor_argument_records_nothing(embedded: Harness, kwargs: dict[str, Any], field: str) -> None:
    """A bad constructor argument names the field and no audit_started is written."""
    with pytest.raises(AuditValidationError, match=field):
        AuditTrail(**kwargs, **embedded.options())
    assert count_events(embedded.log_dir) == 0


def test_bad_topic_is_a_configuration_error(embedded: Harness) -> None:
    """An invalid topic name is refused before anything is sent, naming the setting."""
    from secureml.audit import AuditConfigError

    with pytest.raises(AuditConfigError, match="topic"):
        AuditTrail("x", log_dir=embedded.log_dir, bootstrap_servers="127.0.0.1:1", topic="bad topic!")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"start_time": "yesterday"}, "start_time"), ({"end_time": 5}, "end_time"), ({"limit": -1}, "limit"),
     ({"operation_name": 3}, "operation_name"), ({"output": "xml"}, "output")],
)
def test_get_audit_logs_rejects_bad_filters(embedded: Harness, kwargs: dict[str, Any], field: str) -> None:
    """get_audit_logs names the bad filter instead of returning a wrong answer."""
    AuditTrail("x", **embedded.options()).close()
    with pytest.raises(AuditValidationError, match=field):
        get_audit_logs(log_dir=embedded.log_dir, **kwargs)
