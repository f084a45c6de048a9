"""The user guide's audit examples run unchanged, on the embedded log and on Kafka, with equal results."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from conftest import Harness, unique_topic
from guide import ALL, CREATE_AND_LOG, DECORATOR, GET_LOGS, stands_in_guide

VOLATILE = {"event_id", "operation_id", "operation_start", "timestamp", "hash", "prev_hash",
            "producer_host", "producer_pid"}


@pytest.mark.parametrize("name", sorted(ALL))
def test_snippet_is_the_guides_text(name: str) -> None:
    """Each example the tests run stands in the user guide line for line."""
    assert stands_in_guide(ALL[name])


def run_guide(harness: Harness, monkeypatch: pytest.MonkeyPatch, workdir: Path) -> dict[str, Any]:
    """Run the logging and retrieval examples in workdir; return what they produced."""
    workdir.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(workdir)
    harness.use_environment(monkeypatch)
    scope: dict[str, Any] = {}
    exec(CREATE_AND_LOG, scope)
    exec(DECORATOR, scope)
    with pytest.raises(NameError, match="processed_data"):
        scope["process_sensitive_data"]([3, 1, 2], anonymize=True)
    harness.sync()
    exec(GET_LOGS, scope)
    from secureml.audit import get_audit_logs

    return {
        "guide_query": scope["logs"],
        "trail": get_audit_logs(operation_id=scope["audit"].operation_id, log_dir="audit_logs"),
        "decorated": get_audit_logs(operation_name="data_preprocessing", log_dir="audit_logs"),
        "by_name": get_audit_logs(operation_name="credit_risk_model_training", log_dir="audit_logs"),
    }


def normalised(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Logs without the fields that differ between runs (ids, times, hashes, producer)."""
    out = []
    for log in logs:
        log = {k: v for k, v in log.items() if k not in VOLATILE}
        if log["event_type"] in ("function_return", "error", "audit_closed") and log.get("details"):
            log["details"] = {k: v for k, v in log["details"].items() if k != "execution_time"}
        out.append(log)
    return out


def test_guide_examples(harness: Harness, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The guide's trail is recorded in full: envelope, typed payload, gapless seq, chained hashes."""
    result = run_guide(harness, monkeypatch, tmp_path)
    assert result["guide_query"] == []  # the guide's filters name a made-up id and 2023 dates
    trail = result["trail"]
    assert [log["event_type"] for log in trail] == [
        "audit_started", "data_access", "data_transformation", "model_training", "model_inference",
        "compliance_check", "user_request", "audit_closed",
    ]
    assert [log["seq"] for log in trail] == list(range(8))
    assert trail == result["by_name"]
    for previous, log in zip(trail, trail[1:]):
        assert log["prev_hash"] == previous["hash"]
        assert log["timestamp"] >= previous["timestamp"] and log["timestamp"].endswith("+00:00")
    access = trail[1]
    assert access["columns_accessed"] == ["income", "credit_score", "loan_history"]
    assert access["num_records"] == 5000 and isinstance(access["num_records"], int)
    assert access["user"] == "analyst_123" and access["purpose"] == "model_training"
    assert all(log["context"] == {"app_version": "1.0.0"} for log in trail)
    assert all(log["regulations"] == ["GDPR", "CCPA"] for log in trail)
    assert trail[2]["parameters"]["quasi_identifiers"] == ["age", "zipcode", "gender"]
    assert trail[3]["privacy_parameters"] == {"epsilon": 1.0, "delta": 1e-5}
    assert trail[4]["output"] == "high_risk" and trail[4]["confidence"] == 0.85
    assert trail[5]["result"] is True and trail[5]["details"]["columns_after"] == 10
    assert trail[6]["user_id"] == "user_12345" and trail[6]["status"] == "completed"
    assert trail[7]["status"] == "completed" and trail[7]["event_count"] == 8
    assert trail[7]["details"]["output_location"] == "models/credit_risk_v1.pkl"


def test_decorated_call_records_the_exception(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The guide's decorated function raises NameError: call, error and error close are recorded."""
    decorated = run_guide(harness, monkeypatch, tmp_path)["decorated"]
    assert [log["event_type"] for log in decorated] == ["audit_started", "function_call", "error", "audit_closed"]
    call = decorated[1]
    assert call["function_name"] == "process_sensitive_data"
    assert call["arguments"] == {"data": {"type": "list", "size": 3}, "anonymize": {"type": "bool"}}
    assert "3, 1, 2" not in str(decorated)  # argument values are not recorded by default
    assert decorated[2]["error_type"] == "NameError" and "processed_data" in decorated[2]["message"]
    assert decorated[3]["status"] == "error" and decorated[-1]["regulations"] == ["GDPR"]


def test_same_results_on_both_transports(kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """get_audit_logs gives the same answers whether events went through Kafka or the embedded log."""
    results = {}
    for kind in ("embedded", "kafka"):
        workdir = tmp_path / kind
        harness = Harness(kind, workdir / "audit_logs", kafka_bootstrap if kind == "kafka" else "",
                          unique_topic())
        with monkeypatch.context() as patch:
            results[kind] = run_guide(harness, patch, workdir)
        os.chdir(tmp_path)
    for key in ("guide_query", "trail", "decorated", "by_name"):
        assert normalised(results["embedded"][key]) == normalised(results["kafka"][key]), key
    assert len(results["kafka"]["trail"]) == 8
