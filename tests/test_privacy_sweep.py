"""Crypto-shredding end to end (issue 9): a subject through Kafka and the embedded log, materialised,
compacted, alerted on and reported; after erase no plaintext of it is left in any file, topic, alert
or report, the proofs still verify, and the other subjects still read as logged."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
from confluent_kafka import Consumer, KafkaError, TopicPartition
from pypdf import PdfReader
from support.alerting import DAY, MovableClock, make_alerter, published

from conftest import Harness
from secureml.alerting import load_rules
from secureml.audit import AuditTrail, get_audit_logs, verify
from secureml.audit.privacy.erase import erase_subject
from secureml.audit.privacy.keys import is_pseudonym
from secureml.audit.privacy.reveal import ERASED
from secureml.lake.table import Lake
from secureml.materializer import materialize
from secureml.reporting import ReportGenerator

SUBJECT = "user_12345"
SUBJECT_VALUES = (SUBJECT, "bob.subject@example.com", "Bob Subject", "user_12345 credit features")
OTHER = "user_999"
RULES = """
rules:
  bulk_access: {threshold: 100, window: 1h}
  operation_not_closed: {enabled: false}
"""


def log_subjects(harness: Harness) -> None:
    """Two data subjects' requests and inferences, and one analyst's bulk read."""
    for subject, email, name in ((SUBJECT, "bob.subject@example.com", "Bob Subject"),
                                 (OTHER, "carol.other@example.com", "Carol Other")):
        with AuditTrail("dsr", user="analyst_bob", regulations=["GDPR"], **harness.options()) as trail:
            trail.log_user_request("access", subject, {"email": email, "name": name}, "pending")
            trail.log_model_inference("credit_v1", f"{subject} credit features", {"score": 0.4}, 0.8,
                                      subject=subject)
            trail.log_data_access("customers", ["email"], 500, "dsr lookup")


def files_text(log_dir: Path) -> bytes:
    """Every file under log_dir as bytes, with every Parquet file's values decoded to text as well."""
    parts = []
    for path in sorted(log_dir.rglob("*")):
        if not path.is_file():
            continue
        parts.append(path.read_bytes())
        if path.suffix == ".parquet":
            parts.append(str(pq.read_table(path).to_pylist()).encode())
        if path.suffix == ".pdf":
            parts.append("".join(page.extract_text() for page in PdfReader(path).pages).encode())
    return b"\n".join(parts)


def topics_bytes(harness: Harness) -> bytes:
    """Every key, value and header of every message in the test's topics (events, keys, alerts, DLQ)."""
    consumer = Consumer({"bootstrap.servers": harness.bootstrap, "group.id": "privacy-sweep",
                         "enable.partition.eof": True, "enable.auto.commit": False})
    parts: list[bytes] = []
    try:
        topics = [t for t in consumer.list_topics(timeout=10).topics if t.startswith(harness.topic)]
        assert f"{harness.topic}-keys" in topics and harness.topic in topics
        for topic in topics:
            metadata = consumer.list_topics(topic, timeout=10).topics[topic]
            for partition in metadata.partitions:
                end = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
                if end == 0:
                    continue
                consumer.assign([TopicPartition(topic, partition, 0)])
                while True:
                    message = consumer.poll(5)
                    assert message is not None, f"{topic}/{partition} did not reach its end"
                    if message.error():
                        assert message.error().code() == KafkaError._PARTITION_EOF
                        break
                    parts += [message.key() or b"", message.value() or b""]
                    parts += [v or b"" for _, v in message.headers() or ()]
    finally:
        consumer.close()
    return b"\n".join(parts)


def report_text(log_dir: Path, name: str) -> str:
    """The text of a PDF audit report over the lake."""
    pdf = log_dir / f"{name}.pdf"
    ReportGenerator().generate_audit_report({"log_dir": str(log_dir)}, pdf, "Privacy")
    return "".join(page.extract_text() for page in PdfReader(pdf).pages)


def test_erased_subject_leaves_no_plaintext_anywhere(harness: Harness) -> None:
    """Kafka and embedded: after erase no file, Parquet value, topic, alert or report holds the subject in clear."""
    log_subjects(harness)
    clock = MovableClock(40 * DAY)  # past the GDPR deadline of both requests
    make_alerter(harness, RULES, clock=clock).run(once=True)
    materialize(harness.log_dir, **_kafka(harness), group=f"m-{harness.topic}")
    Lake(harness.log_dir).compact_all()
    before = get_audit_logs(log_dir=harness.log_dir, subject=SUBJECT)
    assert {log["event_type"] for log in before} == {"user_request", "model_inference"}
    assert next(log for log in before if log["event_type"] == "model_inference")["input_data"] == SUBJECT_VALUES[3]
    alerts = published(harness)
    assert {a.rule_id for a in alerts} >= {"bulk_access", "request_deadline_missed"}
    deadline = [a for a in alerts if a.rule_id == "request_deadline_missed"]
    assert len(deadline) == 2, [a.to_dict() for a in deadline]
    assert all(is_pseudonym(a.details.get("user_id")) for a in deadline), [a.to_dict() for a in deadline]
    report_text(harness.log_dir, "before")

    result = erase_subject(SUBJECT, harness.log_dir, reason="GDPR request 17", **_kafka(harness))
    materialize(harness.log_dir, **_kafka(harness), group=f"m-{harness.topic}")
    after_report = report_text(harness.log_dir, "after")

    swept = files_text(harness.log_dir) + after_report.encode()
    if harness.kind == "kafka":
        swept += topics_bytes(harness)
    for value in SUBJECT_VALUES:
        assert value.encode() not in swept, value
    assert b"carol.other@example.com" not in swept  # encrypted at rest, though not erased
    logs = get_audit_logs(log_dir=harness.log_dir, subject=result["subject"])
    assert {log["event_type"] for log in logs} == {"user_request", "model_inference"}
    assert all(ERASED in (log.get("input_data"), (log.get("details") or {}).get("email")) for log in logs)
    assert all(log.get("user_id") in (None, result["subject"]) for log in logs)
    other = get_audit_logs(log_dir=harness.log_dir, subject=OTHER, event_type="user_request")[0]
    assert other["details"] == {"email": "carol.other@example.com", "name": "Carol Other"}
    erasure = get_audit_logs(log_dir=harness.log_dir, event_type="subject_erased")
    assert [e["details"]["subject"] for e in erasure] == [result["subject"]]
    verified = verify(harness.log_dir)
    assert verified.ok, [f.message for f in verified.all_findings()]
    assert verified.subjects_erased == 1


def test_rules_and_queries_on_pseudonyms_match_clear_ids(harness: Harness, tmp_path: Path) -> None:
    """The same events with and without the privacy policy raise the same alerts and answer the same queries."""
    results = {}
    for privacy in ("off", None):
        log_dir = tmp_path / f"logs-{privacy}"
        run = Harness(harness.kind, log_dir, harness.bootstrap,
                      f"{harness.topic}-{privacy or 'on'}" if harness.kind == "kafka" else harness.topic)
        for user, records in (("analyst_bob", 80), ("analyst_bob", 80), ("dpo", 500), ("carol", 20)):
            with AuditTrail("reads", user=user, privacy=privacy, **run.options()) as trail:
                trail.log_data_access("customers", ["email"], records, "care")
                trail.log_user_request("erasure", f"subject-of-{user}", None, "pending")
        rules = load_rules(text=RULES + "  sensitive_column_access: {allowed_users: [dpo], column_roles: "
                                        "{email: [support]}}\n")
        alerter = make_alerter(run, None, clock=MovableClock(40 * DAY), log_dir=log_dir)
        alerter.rules = list(rules)
        alerter.run(once=True)
        run.sync()
        alerts = published(run, log_dir=log_dir)
        results[privacy] = {
            "alerts": sorted((a.rule_id, len(a.triggers)) for a in alerts),
            "bob": len(get_audit_logs(log_dir=log_dir, user="analyst_bob")),
            "subject": len(get_audit_logs(log_dir=log_dir, subject="subject-of-dpo")),
        }
    assert results["off"] == results[None]
    assert ("bulk_access", 2) in results[None]["alerts"]  # analyst_bob, grouped by pseudonym
    # analyst_bob twice and carol read the sensitive column; dpo, allowed by clear name, raises nothing
    assert sum(rule == "sensitive_column_access" for rule, _ in results[None]["alerts"]) == 3
    assert results[None]["bob"] == 8 and results[None]["subject"] == 1


def _kafka(harness: Harness) -> dict[str, str]:
    return {"bootstrap_servers": harness.bootstrap, "topic": harness.topic} if harness.kind == "kafka" else {}


def test_kafka_key_topic_is_compacted_and_erasure_is_a_tombstone(kafka: Harness) -> None:
    """`<topic>-keys` is a compacted one-partition topic with the documented bounds; erase writes a tombstone."""
    from confluent_kafka.admin import AdminClient, ConfigResource

    from secureml.audit.privacy.kafka_keys import TOPIC_CONFIG

    with AuditTrail("keys", user="analyst", **kafka.options()) as trail:
        trail.log_user_request("access", SUBJECT, None, "pending")
    result = erase_subject(SUBJECT, kafka.log_dir, **_kafka(kafka))
    topic = f"{kafka.topic}-keys"
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    assert {name: configs[name].value for name in TOPIC_CONFIG} == TOPIC_CONFIG
    assert len(admin.list_topics(topic, timeout=10).topics[topic].partitions) == 1
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": "keys-read",
                         "enable.partition.eof": True, "enable.auto.commit": False})
    records = []
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        while (message := consumer.poll(5)) is not None and not message.error():
            records.append((message.key().decode(), message.value()))
    finally:
        consumer.close()
    mine = [value for key, value in records if key == result["subject"]]
    assert len(mine) == 2 and mine[0] and mine[-1] is None  # the wrapped key, then its tombstone
