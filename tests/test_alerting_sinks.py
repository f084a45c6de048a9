"""Sinks (stdout, JSON lines, webhook), the Avro alert schema, and the `secureml-audit alerts` command."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from pathlib import Path

import fastavro
import pytest
from support.alerting import make_alerter, published

from conftest import Harness, run_cli
from secureml.alerting import JsonlSink, StdoutSink, WebhookSink, load_rules
from secureml.alerting.alert import Alert, Trigger, alert_id, load_alert_schema
from secureml.alerting.sinks import Outbox, parse_sink
from secureml.audit import AuditTrail

QUIET_HOURS = "rules: {access_outside_hours: {enabled: false}}"


def log_violations(harness: Harness) -> None:
    """Two accesses without a purpose, one of them also without a user."""
    with AuditTrail("job", **harness.options(), user="ann") as t:
        t.log_data_access("customers", ["age"], 3, None)
    with AuditTrail("job", **harness.options()) as t:
        t.log_data_access("customers", ["age"], 3, None)


class Receiver:
    """A local HTTP endpoint that records the alerts posted to it, failing the first ``fail`` requests."""

    def __init__(self, fail: int = 0) -> None:
        self.bodies: list[dict[str, object]] = []
        self.keys: list[str] = []
        self.fail = fail
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.fail:
                    receiver.fail -= 1
                    self.send_response(503)
                else:
                    receiver.bodies.append(json.loads(body))
                    receiver.keys.append(self.headers["Idempotency-Key"])
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver for one test."""
    made = Receiver()
    yield made
    made.server.shutdown()


def test_every_sink_gets_every_alert(harness: Harness, tmp_path: Path, receiver: Receiver) -> None:
    """stdout, a JSON-lines file and a webhook all get the alerts that go to the alerts record."""
    log_violations(harness)
    out = io.StringIO()
    sinks = (StdoutSink(out), JsonlSink(tmp_path / "sink" / "alerts.jsonl"), WebhookSink(receiver.url))
    make_alerter(harness, QUIET_HOURS, sinks=sinks).run(once=True)
    ids = sorted(a.alert_id for a in published(harness))
    assert len(ids) == 3
    assert sorted(json.loads(line)["alert_id"] for line in out.getvalue().splitlines()) == ids
    lines = (tmp_path / "sink" / "alerts.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["alert_id"] for line in lines) == ids
    assert sorted(str(b["alert_id"]) for b in receiver.bodies) == sorted(receiver.keys) == ids
    assert (tmp_path / "sink" / "alerts.jsonl").stat().st_mode & 0o077 == 0


def test_a_failing_webhook_holds_up_nothing_and_later_gets_each_alert_once(embedded: Harness, receiver: Receiver,
                                                                          tmp_path: Path) -> None:
    """The webhook refuses: the run ends, the record and the jsonl sink have every alert, the webhook's stay
    owed on disk; the next run delivers each once to it, and the jsonl sink gets nothing twice."""
    log_violations(embedded)
    receiver.fail = 10**6
    jsonl = tmp_path / "sink" / "alerts.jsonl"

    def sinks() -> tuple[JsonlSink, WebhookSink]:
        return JsonlSink(jsonl), WebhookSink(receiver.url, attempts=1)

    stats = make_alerter(embedded, QUIET_HOURS, sinks=sinks(), sink_wait=1.0).run(once=True)
    assert stats.alerts == 3 and stats.owed == 3
    assert len(published(embedded)) == 3 and len(jsonl.read_text().splitlines()) == 3 and receiver.bodies == []
    receiver.fail = 0
    stats = make_alerter(embedded, QUIET_HOURS, sinks=sinks()).run(once=True)
    assert stats.alerts == 0 and stats.owed == 0
    ids = sorted(a.alert_id for a in published(embedded))
    assert sorted(str(b["alert_id"]) for b in receiver.bodies) == ids and len(receiver.bodies) == 3
    assert sorted(json.loads(line)["alert_id"] for line in jsonl.read_text().splitlines()) == ids


def test_a_webhook_that_never_answers_blocks_neither_the_stream_nor_the_other_sinks(
    embedded: Harness, tmp_path: Path
) -> None:
    """A receiver that holds every request open: the run finishes while it still hangs, the jsonl sink has all."""
    release = threading.Event()

    class Hanging(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            release.wait(120)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hanging)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        log_violations(embedded)
        jsonl = tmp_path / "sink" / "alerts.jsonl"
        hook = WebhookSink(f"http://127.0.0.1:{server.server_port}/alerts", timeout=60, attempts=1)
        stats = make_alerter(embedded, QUIET_HOURS, sinks=(hook, JsonlSink(jsonl)), sink_wait=1.0).run(once=True)
        assert not release.is_set()  # the run is over while the webhook still holds its first request
        assert stats.alerts == 3 and stats.owed == 3 and len(jsonl.read_text().splitlines()) == 3
        assert len(published(embedded)) == 3
    finally:
        release.set()
        server.shutdown()


def test_sink_specs() -> None:
    """--sink accepts stdout, jsonl:PATH and webhook:URL, and explains anything else."""
    assert isinstance(parse_sink("stdout"), StdoutSink)
    assert isinstance(parse_sink("jsonl:/tmp/a.jsonl"), JsonlSink)
    assert isinstance(parse_sink("webhook:https://example.org/hook"), WebhookSink)
    with pytest.raises(Exception, match="use stdout, jsonl:PATH or webhook"):
        parse_sink("email:dpo@example.org")


@pytest.mark.kafka
def test_alerts_are_avro_records_of_the_published_schema(kafka: Harness) -> None:
    """Messages on audit-alerts decode with schemas/audit_alert.v1.avsc alone, keyed by operation_id."""
    from confluent_kafka import Consumer, TopicPartition

    log_violations(kafka)
    make_alerter(kafka, QUIET_HOURS).run(once=True)
    alerts = published(kafka)
    schema = fastavro.parse_schema(load_alert_schema())
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": "avro-check"})
    topic = f"{kafka.topic}-alerts"
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        records: list[dict[str, object]] = []
        while len(records) < len(alerts):
            msg = consumer.poll(5)
            assert msg is not None and msg.error() is None
            value = msg.value()
            assert value is not None
            record = fastavro.schemaless_reader(io.BytesIO(value), schema, None)
            assert isinstance(record, dict)
            assert msg.key() == str(record["operation_id"]).encode()
            records.append(record)
    finally:
        consumer.close()
    assert sorted(str(r["alert_id"]) for r in records) == sorted(a.alert_id for a in alerts)
    assert all(r["triggers"] and json.loads(str(r["details"])) for r in records)


def test_cli_runs_once_with_rules_and_sinks(embedded: Harness, tmp_path: Path) -> None:
    """`secureml-audit alerts --log-dir D --rules F --sink jsonl:P --once` publishes and exits 0."""
    log_violations(embedded)
    rules = tmp_path / "rules.yaml"
    rules.write_text(QUIET_HOURS + "\n")
    sink = tmp_path / "out.jsonl"
    done = run_cli("alerts", "--log-dir", str(embedded.log_dir), "--rules", str(rules), "--sink", f"jsonl:{sink}",
                   "--sink", "stdout", "--once")
    assert done.returncode == 0, done.stderr
    assert "3 alerts published" in done.stderr
    assert len(sink.read_text().splitlines()) == len(done.stdout.splitlines()) == len(published(embedded)) == 3


def test_cli_reports_a_bad_rules_file(tmp_path: Path) -> None:
    """A bad rules file exits 1 with the file, line and field on stderr."""
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  bulk_access:\n    threshold: lots\n")
    done = run_cli("alerts", "--log-dir", str(tmp_path / "logs"), "--rules", str(rules), "--once")
    assert done.returncode == 1
    assert f"{rules}:3: rules.bulk_access.threshold: Input should be a valid integer" in done.stderr


def test_cli_lists_the_builtin_rules(tmp_path: Path) -> None:
    """--list-rules says which rules are on, which need configuration and how to give it, and each legal basis."""
    done = run_cli("alerts", "--list-rules")
    assert done.returncode == 0
    out = done.stdout
    assert out.startswith("Rules with no rules file (the defaults): 7 on, 3 off until configured, 0 switched off.")
    assert out.count("\n    Basis: GDPR") == 10
    assert "\nrequest_deadline_missed  ON\n" in out
    assert "\naccess_outside_hours  OFF, needs configuration: timezone, start, end\n" in out
    assert "\nbulk_access  OFF, needs configuration: threshold\n" in out
    assert "Configure it in the rules file:  rules: {bulk_access: {threshold: 50000, window: 1h}}" in out
    example = out.split("Configure it in the rules file:  ")[1].splitlines()[0]
    assert "bulk_access" in {r.rule_id for r in load_rules(text=example)}  # the printed example is a rules file
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  bulk_access: {threshold: 5000}\n  operation_not_closed: {enabled: false}\n")
    under = run_cli("alerts", "--list-rules", "--rules", str(rules)).stdout
    assert f"Rules under {rules}: 7 on, 2 off until configured, 1 switched off." in under
    assert "\n    Set: threshold=5000\n" in under
    assert "\nbulk_access  ON\n" in under and "\noperation_not_closed  OFF (enabled: false)\n" in under


def test_a_link_planted_as_the_alerts_record_is_refused(embedded: Harness, tmp_path: Path) -> None:
    """log_dir/alerts/alerts.jsonl -> elsewhere: the alerter refuses it and leaves the target untouched."""
    from secureml.alerting import AlertingError

    log_violations(embedded)
    target = tmp_path / "elsewhere.jsonl"
    target.write_text("mine\n")
    (embedded.log_dir / "alerts").mkdir(parents=True, exist_ok=True)
    (embedded.log_dir / "alerts" / "alerts.jsonl").symlink_to(target)
    with pytest.raises(AlertingError, match="symbolic link"):
        make_alerter(embedded, QUIET_HOURS).run(once=True)
    assert target.read_text() == "mine\n"


def _alert(n: int) -> Alert:
    """A minimal alert with its own id."""
    trigger = Trigger(f"op-{n}", 1, f"event-{n}", "log/0", n)
    return Alert(alert_id(f"rule-{n}", [str(n)]), "access_without_purpose", "high", "GDPR", "Art. 5(1)(b)",
                 f"alert {n}", f"op-{n}", 1_700_000_000_000_000, 1_700_000_000_000_000, (trigger,))


def test_a_ledger_that_cannot_be_written_holds_delivery_and_resumes_without_duplicates(tmp_path: Path) -> None:
    """A sink's ledger failing (here a directory where its file belongs) keeps the thread alive and
    retrying; the delivered alert is not delivered again, and once the ledger is writable the rest follow."""
    jsonl = tmp_path / "alerts.jsonl"
    outbox_dir = tmp_path / "outbox"
    alerts = [_alert(n) for n in range(3)]
    outbox = Outbox(JsonlSink(jsonl), outbox_dir, "jsonl-test")
    ledger = outbox_dir / "jsonl-test.delivered"
    ledger.mkdir()  # appending to it fails with IsADirectoryError, a real OSError
    try:
        outbox.put(alerts)
        deadline = time.monotonic() + 10
        while not outbox.failure and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "cannot record it" in outbox.failure and alerts[0].alert_id in outbox.failure
        time.sleep(1.6)  # several retries of the ledger: the sink must not get the first alert again
        assert [json.loads(line)["alert_id"] for line in jsonl.read_text().splitlines()] == [alerts[0].alert_id]
        assert outbox.owed == 3
        ledger.rmdir()
        assert outbox.drain(15) == 0, outbox.failure
        assert [json.loads(line)["alert_id"] for line in jsonl.read_text().splitlines()] == [a.alert_id for a in alerts]
        assert outbox.failure == ""
        assert [line for line in ledger.read_text().splitlines() if line] == [a.alert_id for a in alerts]
    finally:
        outbox.close()


def test_an_outbox_closed_while_its_ledger_fails_keeps_the_alert_owed(tmp_path: Path) -> None:
    """Closing while the ledger cannot be written leaves the alerts owed on disk for the next run."""
    outbox_dir = tmp_path / "outbox"
    outbox = Outbox(JsonlSink(tmp_path / "alerts.jsonl"), outbox_dir, "jsonl-test")
    (outbox_dir / "jsonl-test.delivered").mkdir()
    outbox.put([_alert(0), _alert(1)])
    deadline = time.monotonic() + 10
    while not outbox.failure and time.monotonic() < deadline:
        time.sleep(0.05)
    outbox.close()
    assert not outbox._thread.is_alive()
    assert len((outbox_dir / "jsonl-test.pending").read_text().splitlines()) == 2
