"""AuditTrail and audit_function behaviour, the same on both transports."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from conftest import Harness
from secureml.audit import AuditClosedError, AuditTrail, audit_function, get_audit_logs
from secureml.audit.codec import canonical_bytes, event_hash


def _chain_ok(logs: list[dict[str, Any]]) -> bool:
    return all(b["prev_hash"] == a["hash"] for a, b in zip(logs, logs[1:])) and logs[0]["prev_hash"] == ""


def test_context_manager_closes_completed_or_error(harness: Harness) -> None:
    """`with AuditTrail(...)` closes with 'completed', or logs the error and closes with 'error'."""
    with AuditTrail("ok_op", **harness.options()) as ok:
        ok.log_data_access("d", ["a"], 1, "p")
    with pytest.raises(RuntimeError, match="boom"), AuditTrail("bad_op", **harness.options()) as bad:
        raise RuntimeError("boom")
    harness.sync()
    ok_logs = get_audit_logs(operation_id=ok.operation_id, log_dir=harness.log_dir)
    bad_logs = get_audit_logs(operation_id=bad.operation_id, log_dir=harness.log_dir)
    assert [log["event_type"] for log in ok_logs] == ["audit_started", "data_access", "audit_closed"]
    assert ok_logs[-1]["status"] == "completed"
    assert [log["event_type"] for log in bad_logs] == ["audit_started", "error", "audit_closed"]
    assert bad_logs[1]["error_type"] == "RuntimeError" and bad_logs[-1]["status"] == "error"


def test_log_level_filters_events_but_keeps_lifecycle(harness: Harness) -> None:
    """Events below log_level are not recorded; started/closed always are; seq stays gapless."""
    trail = AuditTrail("levels", log_level="WARNING", **harness.options())
    assert trail.log_model_inference("m", "req-1", "ok", 0.9) is None
    assert trail.log_compliance_check("c", "GDPR", True, {}) is None  # passed = INFO
    assert trail.log_compliance_check("c", "GDPR", False, {}) is not None  # failed = WARNING
    assert trail.log_model_inference("m", "req-2", "ok", level="ERROR") is not None
    trail.close()
    harness.sync()
    logs = get_audit_logs(operation_id=trail.operation_id, log_dir=harness.log_dir)
    assert [(log["event_type"], log["level"]) for log in logs] == [
        ("audit_started", 20), ("compliance_check", 30), ("model_inference", 40), ("audit_closed", 20)
    ]
    assert [log["seq"] for log in logs] == [0, 1, 2, 3] and _chain_ok(logs)


def test_threads_share_one_trail_without_gaps(harness: Harness) -> None:
    """Eight threads logging into one trail give a gapless seq and an unbroken hash chain."""
    trail = AuditTrail("threads", **harness.options())

    def work(worker: int) -> None:
        for i in range(250):
            trail.log_model_inference(f"model-{worker}", f"req-{i}", i, 0.5)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = trail.close()
    assert report.ok and report.sent == report.delivered == 2002
    harness.sync()
    logs = get_audit_logs(operation_id=trail.operation_id, log_dir=harness.log_dir)
    assert [log["seq"] for log in logs] == list(range(2002))
    assert _chain_ok(logs)
    assert logs[-1]["event_count"] == 2002


def test_hash_covers_canonical_bytes_of_the_row(harness: Harness) -> None:
    """Every stored event's hash is the SHA-256 of its canonical bytes, recomputed from the row."""
    with AuditTrail("hashing", context={"k": [1, 2]}, regulations=["GDPR"], **harness.options()) as trail:
        trail.log_model_training("rf", "d", {"n": 1}, {"acc": 0.5}, None)
    harness.sync()
    table = get_audit_logs(operation_id=trail.operation_id, log_dir=harness.log_dir, output="arrow")
    for column in ("timestamp", "operation_start"):
        table = table.set_column(table.schema.get_field_index(column), column, table[column].cast("int64"))
    for row in table.to_pylist():
        assert event_hash(canonical_bytes(row)) == row["hash"]


def test_closed_trail_refuses_events_and_close_is_idempotent(embedded: Harness) -> None:
    """After close(), log calls raise AuditClosedError; a second close() returns the first report."""
    trail = AuditTrail("closing", **embedded.options())
    first = trail.close()
    with pytest.raises(AuditClosedError, match="closed"):
        trail.log_data_access("d", ["a"], 1, "p")
    assert trail.close() == first and first.ok and first.sent == 2


def test_flush_reports_delivery(harness: Harness) -> None:
    """flush() waits for the broker or disk and reports every event sent as delivered."""
    trail = AuditTrail("flushing", **harness.options())
    for i in range(100):
        trail.log_model_inference("m", f"r{i}", i)
    report = trail.flush(30)
    assert report.ok and report.sent == 101 and report.delivered == 101 and report.pending == 0
    trail.close()


def test_custom_event_and_default_user(harness: Harness) -> None:
    """log_event records custom types with details; the trail's user applies unless overridden."""
    trail = AuditTrail("custom", user="svc", **harness.options())
    trail.log_event("model.deployed", {"endpoint": "/score"})
    trail.log_data_access("d", ["a"], 3, None, user="alice")
    with pytest.raises(ValueError, match="built-in"):
        trail.log_event("data_access", {})
    trail.close()
    harness.sync()
    logs = get_audit_logs(operation_id=trail.operation_id, log_dir=harness.log_dir)
    assert logs[1]["event_type"] == "model.deployed" and logs[1]["details"] == {"endpoint": "/score"}
    assert logs[1]["user"] == "svc" and logs[2]["user"] == "alice" and logs[2]["purpose"] is None
    assert get_audit_logs(log_dir=harness.log_dir, user="alice")[0]["seq"] == 2


def test_decorator_records_only_allowed_values(embedded: Harness) -> None:
    """audit_function keeps argument types and sizes, and values only where record_values allows."""

    @audit_function("scoring", log_dir=embedded.log_dir, record_values=("threshold", "return"))
    def score(records: list[dict[str, str]], threshold: float = 0.5) -> list[int]:
        return [1 for _ in records]

    assert score([{"ssn": "123-45-6789"}] * 4, threshold=0.7) == [1, 1, 1, 1]
    logs = get_audit_logs(operation_name="scoring", log_dir=embedded.log_dir)
    assert [log["event_type"] for log in logs] == ["audit_started", "function_call", "function_return", "audit_closed"]
    assert logs[1]["arguments"] == {
        "records": {"type": "list", "size": 4}, "threshold": {"type": "float", "value": 0.7}
    }
    assert logs[2]["return_value"] == {"type": "list", "size": 4, "value": [1, 1, 1, 1]}
    assert logs[2]["execution_time"] >= 0
    segment = next((embedded.log_dir / "log").iterdir())
    assert b"123-45-6789" not in segment.read_bytes()


def test_decorator_on_async_function(embedded: Harness) -> None:
    """An async def function is audited when awaited: call, return, close; exceptions re-raised."""

    @audit_function("async_job", log_dir=embedded.log_dir)
    async def job(n: int) -> int:
        await asyncio.sleep(0)
        if n < 0:
            raise ValueError("negative")
        return n * 2

    assert asyncio.run(job(21)) == 42
    with pytest.raises(ValueError, match="negative"):
        asyncio.run(job(-1))
    logs = get_audit_logs(operation_name="async_job", log_dir=embedded.log_dir)
    kinds = [log["event_type"] for log in logs]
    assert kinds.count("function_return") == 1 and kinds.count("error") == 1 and kinds.count("audit_closed") == 2


def test_decorator_rejects_unknown_record_values(embedded: Harness) -> None:
    """record_values naming no parameter is a mistake caught at decoration time."""
    with pytest.raises(ValueError, match="record_values"):
        audit_function("x", log_dir=embedded.log_dir, record_values=("pasword",))(lambda password: None)
