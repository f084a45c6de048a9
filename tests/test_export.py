"""Exports: each format for a real trail (embedded and Kafka), validated; file, HTTP and Kafka sinks; bad input."""

from __future__ import annotations

import json
import os
import stat
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer
from support.export import http_receiver, log_trail, validate_ocsf, validate_openlineage

from conftest import Harness, run_cli
from secureml.audit import get_audit_logs
from secureml.export.exceptions import ExportSinkError
from secureml.export.runner import Exporter
from secureml.export.sinks import FileSink


def read_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a file."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 60) -> list[dict[str, Any]]:
    """Records of a topic as a read_committed consumer sees them, once ``expected`` arrived (or the time is up)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                         "enable.auto.commit": False})
    consumer.subscribe([topic])
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is None:
                    out.append(json.loads(msg.value()))
            if len(out) >= expected:
                # read a little longer: more than expected (duplicates) must show
                for msg in consumer.consume(1000, 2.0):
                    if msg.error() is None:
                        out.append(json.loads(msg.value()))
                break
    finally:
        consumer.close()
    return out


def test_every_format_of_a_real_trail_is_valid(harness: Harness, tmp_path: Path) -> None:
    """jsonl is get_audit_logs' events; ocsf one valid record per event; openlineage valid START..COMPLETE runs."""
    operation_id = log_trail(harness.options())
    harness.sync()
    events = get_audit_logs(operation_id=operation_id, log_dir=harness.log_dir)
    assert len(events) == 12
    outputs = {}
    for export_format in ("jsonl", "ocsf", "openlineage"):
        path = tmp_path / f"out.{export_format}"
        stats = Exporter(export_format, f"file:{path}", log_dir=harness.log_dir, batch_events=5).run_batch()
        assert stats.events == 12
        outputs[export_format] = read_lines(path)

    assert sorted(r["event_id"] for r in outputs["jsonl"]) == sorted(e["event_id"] for e in events)
    by_id = {e["event_id"]: e for e in events}
    assert all(record == by_id[record["event_id"]] for record in outputs["jsonl"])

    ocsf = outputs["ocsf"]
    assert len(ocsf) == 12
    for record in ocsf:
        validate_ocsf(record)
    classes = {r["metadata"]["uid"].rsplit(":", 1)[1]: (r["class_uid"], r["activity_id"]) for r in ocsf}
    assert classes["0"] == (6002, 3) and classes["11"] == (6002, 4)  # lifecycle start/stop
    assert classes["1"] == (6005, 1)  # data access: datastore read
    check = next(r for r in ocsf if r["class_uid"] == 2003)
    assert check["compliance"]["status_id"] == 3 and check["compliance"]["standards"] == ["GDPR"]
    erasure = next(r for r in ocsf if r["unmapped"]["event_type"] == "user_request")
    assert (erasure["class_uid"], erasure["activity_id"]) == (6005, 7)
    error = next(r for r in ocsf if r["unmapped"]["event_type"] == "error")
    assert error["status_id"] == 2 and error["severity_id"] == 4

    lineage = outputs["openlineage"]
    for record in lineage:
        validate_openlineage(record)
    assert [r["eventType"] for r in lineage] == ["START", "RUNNING", "RUNNING", "RUNNING", "COMPLETE"]
    assert {r["run"]["runId"] for r in lineage} == {operation_id}
    assert {r["job"]["name"] for r in lineage} == {"credit_risk_model_training"}
    assert lineage[1]["inputs"][0]["name"] == "customer_financial_data"
    assert lineage[1]["inputs"][0]["inputFacets"]["inputStatistics"]["rowCount"] == 5000
    assert [d["name"] for d in lineage[2]["outputs"]] == ["anonymized_financial_data"]
    assert lineage[3]["inputs"][0]["name"] == "anonymized_financial_data" and lineage[3]["outputs"]


def test_failed_operation_ends_its_run_with_fail(embedded: Harness, tmp_path: Path) -> None:
    """An operation closed with status 'failed' ends its OpenLineage run with FAIL and an error facet."""
    log_trail(embedded.options(), status="failed")
    path = tmp_path / "lineage.jsonl"
    Exporter("openlineage", f"file:{path}", log_dir=embedded.log_dir).run_batch()
    last = read_lines(path)[-1]
    validate_openlineage(last)
    assert last["eventType"] == "FAIL" and "errorMessage" in last["run"]["facets"]


def test_time_bounds_select_events(embedded: Harness, tmp_path: Path) -> None:
    """--start/--end export only the events inside the bounds (inclusive)."""
    log_trail(embedded.options())
    events = get_audit_logs(log_dir=embedded.log_dir)
    start, end = events[2]["timestamp"], events[5]["timestamp"]
    path = tmp_path / "window.jsonl"
    Exporter("jsonl", f"file:{path}", log_dir=embedded.log_dir, start_time=start, end_time=end).run_batch()
    assert [r["event_id"] for r in read_lines(path)] == [e["event_id"] for e in events[2:6]]


def test_lake_reader_batches_are_bounded_and_in_position_order(harness: Harness) -> None:
    """Batches hold at most batch_events events, in position order per source; together every event once."""
    from secureml.export.events import LakeReader

    for _ in range(3):
        log_trail(harness.options(), inferences=7)
    harness.sync()
    reader = LakeReader(str(harness.log_dir), batch_events=4)
    try:
        batches = list(reader.batches({}))
        assert reader.pending({}) == 48
    finally:
        reader.close()
    assert all(1 <= len(batch.events) <= 4 for batch in batches)
    ids = [event["event_id"] for batch in batches for event in batch.events]
    assert sorted(ids) == sorted(e["event_id"] for e in get_audit_logs(log_dir=harness.log_dir))
    assert len(ids) == len(set(ids)) == 48
    last: dict[str, int] = {}
    for batch in batches:
        ((source, position),) = batch.done.items()
        assert position > last.get(source, -1)
        last[source] = position


def test_file_sink_resumes_and_drops_a_torn_batch(embedded: Harness, tmp_path: Path) -> None:
    """A second export appends only new events; bytes of a batch torn by a crash are cut, nothing is doubled."""
    log_trail(embedded.options())
    path = tmp_path / "audit.jsonl"
    assert Exporter("jsonl", f"file:{path}", log_dir=embedded.log_dir, batch_events=4).run_batch().events == 12
    with open(path, "ab") as f:  # what a crash in the middle of the next batch leaves
        f.write(b'{"event_id": "half a rec')
    log_trail(embedded.options())
    assert Exporter("jsonl", f"file:{path}", log_dir=embedded.log_dir, batch_events=4).run_batch().events == 12
    assert Exporter("jsonl", f"file:{path}", log_dir=embedded.log_dir).run_batch().events == 0
    ids = [r["event_id"] for r in read_lines(path)]
    assert len(ids) == len(set(ids)) == 24
    assert sorted(ids) == sorted(e["event_id"] for e in get_audit_logs(log_dir=embedded.log_dir))
    for written in (path, path.with_name(path.name + ".cursor")):
        assert stat.S_IMODE(written.stat().st_mode) == 0o600


def test_file_sink_resumes_after_a_crash_in_its_first_batch(embedded: Harness, tmp_path: Path) -> None:
    """The cursor is claimed before the first byte: a crash inside the first batch is resumed, not refused."""
    log_trail(embedded.options())
    path = tmp_path / "audit.jsonl"
    FileSink(path, "jsonl").close()  # what an exporter killed before its first batch was saved leaves ...
    path.write_bytes(b'{"event_id": "half of the first batch')  # ... with some of that batch written
    assert Exporter("jsonl", f"file:{path}", log_dir=embedded.log_dir, batch_events=4).run_batch().events == 12
    ids = [r["event_id"] for r in read_lines(path)]
    assert sorted(ids) == sorted(e["event_id"] for e in get_audit_logs(log_dir=embedded.log_dir))


def test_file_sink_refuses_a_foreign_file_and_another_format(embedded: Harness, tmp_path: Path) -> None:
    """An existing file no export wrote, or a cursor of another format, is refused (exit 2), not overwritten."""
    log_trail(embedded.options())
    foreign = tmp_path / "notes.txt"
    foreign.write_text("mine\n")
    result = run_cli("export", "--log-dir", str(embedded.log_dir), "--sink", f"file:{foreign}")
    assert result.returncode == 2 and "was not written by an export" in result.stderr
    assert foreign.read_text() == "mine\n"
    path = tmp_path / "out.jsonl"
    assert run_cli("export", "--log-dir", str(embedded.log_dir), "--sink", f"file:{path}").returncode == 0
    result = run_cli("export", "--log-dir", str(embedded.log_dir), "--format", "ocsf", "--sink", f"file:{path}")
    assert result.returncode == 2 and "records a jsonl export" in result.stderr


def test_http_sink_retries_a_failing_server_until_it_recovers(embedded: Harness) -> None:
    """503s are retried with the same Idempotency-Key; every record arrives once the server recovers."""
    log_trail(embedded.options())
    with http_receiver(failures=3) as (url, received):
        stats = Exporter("openlineage", f"http:{url}", log_dir=embedded.log_dir, http_chunk=2).run_batch()
    assert stats.records == 5
    records = received.records()
    assert [r["eventType"] for r in records] == ["START", "RUNNING", "RUNNING", "RUNNING", "COMPLETE"]
    assert len(received.keys) == 3 + 3  # three refusals, then three posts of at most two records
    assert len(set(received.keys[:4])) == 1  # the retried batch kept its key
    assert len(set(received.keys)) == 3 and all(len(k) == 64 for k in received.keys)


def test_http_sink_resumes_after_the_last_delivered_batch(embedded: Harness) -> None:
    """A second export to the same URL sends only events logged since (cursor under log_dir/export/)."""
    log_trail(embedded.options())
    with http_receiver() as (url, received):
        Exporter("jsonl", f"http:{url}", log_dir=embedded.log_dir).run_batch()
        log_trail(embedded.options(), inferences=1)
        Exporter("jsonl", f"http:{url}", log_dir=embedded.log_dir).run_batch()
    ids = [r["event_id"] for r in received.records()]
    assert len(ids) == len(set(ids)) == 12 + 10
    cursors = list((embedded.log_dir / "export").iterdir())
    assert len(cursors) == 1 and stat.S_IMODE(cursors[0].stat().st_mode) == 0o600


def test_http_sink_gives_up_in_bounded_time_naming_the_url(embedded: Harness) -> None:
    """A server that keeps failing stops the export after the deadline, with an error naming the URL (exit 1)."""
    log_trail(embedded.options())
    with http_receiver(failures=-1, status=500) as (url, _received):
        began = time.monotonic()
        with pytest.raises(ExportSinkError, match=f"{url} did not take the export batch within 2s"):
            Exporter("jsonl", f"http:{url}", log_dir=embedded.log_dir, http_deadline=2).run_batch()
        assert time.monotonic() - began < 10
        result = run_cli("export", "--log-dir", str(embedded.log_dir), "--sink", f"http:{url}",
                         "--http-timeout", "1")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"export: {url} did not take the export batch within 1s" in lines[-1]
    assert all("retrying in" in line for line in lines[:-1])  # each wait is said while it lasts


def test_http_sink_does_not_retry_a_refusal(embedded: Harness) -> None:
    """A 400 is not retried: the error names the URL and the status."""
    log_trail(embedded.options())
    with http_receiver(failures=-1, status=400) as (url, received), pytest.raises(
            ExportSinkError, match="refused the export batch \\(HTTP 400"):
        Exporter("jsonl", f"http:{url}", log_dir=embedded.log_dir).run_batch()
    assert len(received.keys) == 1


@pytest.mark.parametrize(("args", "message"), [
    (("--format", "cef"), "export: invalid 'format': must be one of jsonl, ocsf, openlineage"),
    (("--sink", "ftp:/x"), "export: invalid 'sink': must be file:PATH, http:URL or kafka:TOPIC"),
    (("--sink", "kafka:bad topic"), "is not a Kafka topic name"),
    (("--since", "noon"), "export: invalid 'start_time': must be an ISO 8601 time"),
    (("--start", "2026-02-01", "--until", "2026-01-01"), "must not be after end_time"),
    (("--sink", "kafka:out"), "needs a Kafka broker"),
    (("--batch-events", "0"), "export: invalid 'batch_events': must be a positive integer"),
    (("--http-batch", "0"), "export: invalid 'http_batch': must be a positive integer"),
])
def test_bad_input_is_one_line_and_exit_2(embedded: Harness, args: tuple[str, ...], message: str) -> None:
    """Unknown format, bad sink spec, bad time or size: one line on stderr naming the field, exit 2, no traceback."""
    log_trail(embedded.options())
    result = run_cli("export", "--log-dir", str(embedded.log_dir), *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_cli_prints_to_stdout_and_progress_only_when_asked(embedded: Harness) -> None:
    """Default sink is stdout (JSON lines); --progress adds '[export]' lines on stderr, none without it."""
    log_trail(embedded.options())
    quiet = run_cli("export", "--log-dir", str(embedded.log_dir), "--format", "ocsf")
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert len(quiet.stdout.splitlines()) == 12
    loud = run_cli("export", "--log-dir", str(embedded.log_dir), "--progress", "--batch-events", "5")
    lines = loud.stderr.splitlines()
    assert any(line.startswith("[export] 12/12 events (100.0%)") for line in lines), lines
    assert lines[-1].startswith("[export] done: 12 events as 12 jsonl records in ")


@pytest.mark.kafka
def test_kafka_sink_from_the_lake(kafka: Harness) -> None:
    """A batch export into a Kafka topic: one transaction per batch, records keyed by operation."""
    operation_id = log_trail(kafka.options())
    kafka.sync()
    out = f"export-{uuid.uuid4().hex[:8]}"
    stats = Exporter("ocsf", f"kafka:{out}", log_dir=kafka.log_dir, bootstrap_servers=kafka.bootstrap,
                     topic=kafka.topic, batch_events=5).run_batch()
    assert stats.batches == 3
    records = read_topic(kafka.bootstrap, out, 12)
    assert len(records) == 12 and {r["metadata"]["correlation_uid"] for r in records} == {operation_id}
    for record in records:
        validate_ocsf(record)


def test_embedded_follow_exports_new_events(embedded: Harness, tmp_path: Path) -> None:
    """export --follow in embedded mode picks up events logged after it started, until SIGTERM."""
    import signal
    import subprocess
    import sys

    log_trail(embedded.options())
    path = tmp_path / "follow.jsonl"
    env = {**os.environ}
    process = subprocess.Popen([sys.executable, "-m", "secureml.audit.cli", "export", "--follow", "--log-dir",
                                str(embedded.log_dir), "--sink", f"file:{path}"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: path.exists() and len(path.read_text().splitlines()) == 12)
        log_trail(embedded.options(), inferences=1)
        _wait_for(lambda: len(path.read_text().splitlines()) == 22)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    assert process.returncode == 0, process.stderr.read() if process.stderr else ""
    ids = [r["event_id"] for r in read_lines(path)]
    assert len(ids) == len(set(ids)) == 22


def _wait_for(condition: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)
