"""Kafka with TLS, SASL/SCRAM and ACLs: each principal does what its component needs, nothing more.

One secure broker for the module (``scripts/kafka-local start --secure`` on free ports, its own
data dir), stopped at the end; the plain broker at 127.0.0.1:9092 is never touched. The ACLs
are the matrix in the README (Kafka security): the producer writes the audit topic; the
materializer reads it (in its group) and writes the DLQ and checkpoint topics; a reader reads;
anonymous and wrong-password clients get nothing. Every refusal must reach the caller as an
AuditError that names the principal and what to grant, within a bounded time. The last test
prints the matrix, expected against seen.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from support.kafka_secure import (
    Grant,
    MatrixRow,
    SecureBroker,
    SecureBrokerError,
    matrix_table,
    provision,
    wait_until_authenticates,
)
from support.ports import free_port_pair

from secureml.alerting import Alerter
from secureml.alerting.alert import Alert, Trigger, alert_id
from secureml.alerting.exceptions import AlertDeliveryError
from secureml.alerting.topic import KafkaAlertRecord
from secureml.audit import AuditDeliveryError, AuditError, AuditTrail, AuditTransportError, get_audit_logs
from secureml.audit.config import resolve_config
from secureml.audit.transports.kafka import KafkaTransport, ensure_topic
from secureml.integrity.checkpoints import checkpoint_files
from secureml.integrity.keys import default_key_path, generate_key
from secureml.lake.table import Lake
from secureml.materializer import materialize

pytestmark = pytest.mark.kafka

WAIT_S = 30.0
MATRIX: list[MatrixRow] = []
# Every cell the matrix must show by the end of the module: (principal, operation) -> expected.
EXPECTED = {
    ("producer", "write audit topic (AuditTrail)"): "allowed",
    ("producer", "write DLQ topic (AuditTrail)"): "refused",
    ("producer", "write checkpoint topic (AuditTrail)"): "refused",
    ("producer", "read audit topic (Consumer)"): "refused",
    ("producer", "create a topic (ensure_topic)"): "refused",
    ("materializer", "read audit topic in its group (materialize)"): "allowed",
    ("materializer", "write DLQ topic (materialize)"): "allowed",
    ("materializer", "write checkpoint topic (materialize)"): "allowed",
    ("materializer", "write audit topic (AuditTrail)"): "refused",
    ("materializer", "read in a group it has no ACL for (materialize)"): "refused",
    ("alerter", "read audit topic, publish alerts (Alerter)"): "allowed",
    ("alerter", "write audit topic (AuditTrail)"): "refused",
    ("reader", "read audit topic (Consumer)"): "allowed",
    ("reader", "write audit topic (AuditTrail)"): "refused",
    ("reader", "write DLQ topic (Producer)"): "refused",
    ("reader", "run the materializer (materialize)"): "refused",
    ("anonymous (TLS, no SASL)", "connect (AuditTrail)"): "refused",
    ("anonymous (plaintext)", "connect (AuditTrail)"): "refused",
    ("producer, wrong password", "connect (AuditTrail)"): "refused",
    ("unknown user", "connect (AuditTrail)"): "refused",
    ("producer, wrong password", "write, topic not checked (KafkaTransport create_topic=False)"): "refused",
    ("materializer", "write a checkpoint topic it has no WRITE on (materialize)"): "refused",
    ("alerter", "publish alerts to a topic it has no WRITE on (KafkaAlertRecord)"): "refused",
    ("reader", "publish alerts, no WRITE on any topic (KafkaAlertRecord)"): "refused",
}


def record(principal: str, operation: str, seen: str, detail: str) -> None:
    """Note one cell of the matrix, then hold it to its expectation."""
    expected = EXPECTED[(principal, operation)]
    MATRIX.append(MatrixRow(principal, operation, expected, seen, " ".join(detail.split())))
    assert seen == expected, f"{principal} / {operation}: expected {expected}, saw {seen}: {detail}"


@dataclass
class Cluster:
    """The secure broker with its topics, principals and their passwords."""

    broker: SecureBroker
    topic: str
    group: str
    alerter_group: str
    reader_group_prefix: str
    passwords: dict[str, str]

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    @property
    def dlq(self) -> str:
        return f"{self.topic}-dlq"

    @property
    def checkpoints(self) -> str:
        return f"{self.topic}-checkpoints"

    @property
    def alerts(self) -> str:
        return f"{self.topic}-alerts"

    def settings(self, user: str, password: str | None = None) -> dict[str, str]:
        return self.broker.settings(user, self.passwords[user] if password is None else password)

    def env(self, monkeypatch: pytest.MonkeyPatch, user: str) -> None:
        """Configure the library through SECUREML_AUDIT_KAFKA_* variables, as a deployment would."""
        for key, value in self.settings(user).items():
            monkeypatch.setenv("SECUREML_AUDIT_KAFKA_" + key.upper().replace(".", "_"), value)

    def admin_read(self, topic: str) -> list[bytes]:
        """Every message of a topic, read as the admin (bounded)."""
        consumer = Consumer({"bootstrap.servers": self.bootstrap, **self.broker.admin_settings(),
                             "group.id": f"admin-{uuid.uuid4().hex}", "enable.auto.commit": False})
        try:
            partitions = consumer.list_topics(topic, timeout=WAIT_S).topics[topic].partitions
            ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=WAIT_S)[1] for p in partitions}
            consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
            values: list[bytes] = []
            got = dict.fromkeys(partitions, 0)
            deadline = time.monotonic() + WAIT_S
            while any(got[p] < ends[p] for p in partitions) and time.monotonic() < deadline:
                for msg in consumer.consume(100, timeout=1):
                    if msg.error() is None:
                        values.append(msg.value() or b"")
                        got[msg.partition() or 0] = (msg.offset() or 0) + 1
            return values
        finally:
            consumer.close()


@pytest.fixture(autouse=True)
def _privacy_keys_in_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """The matrix covers the audit topics; privacy keys stay in the embedded key store here (the key
    topic's ACLs are in the README's table and exercised by tests/test_privacy_sweep.py without ACLs)."""
    monkeypatch.setenv("SECUREML_AUDIT_KEYSTORE", "file")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A TLS + SASL/SCRAM + ACL broker with the principals of the README's matrix."""
    broker = SecureBroker(free_port_pair(), tmp_path_factory.mktemp("kafka-secure") / "data")
    try:
        try:
            broker.start()
        except SecureBrokerError as exc:
            pytest.fail(str(exc))
        print(f"\nsecure broker at {broker.bootstrap} ready in {broker.started_in:.0f}s (data {broker.data_dir})")
        topic = f"sec-audit-{uuid.uuid4().hex[:8]}"
        group = f"materializer-{uuid.uuid4().hex[:8]}"
        alerter_group = f"alerter-{uuid.uuid4().hex[:8]}"
        reader_prefix = "reader-"
        unpublished = f"{topic}-nocp"  # an audit topic whose checkpoints topic the materializer may not write
        grants = [
            Grant("producer", "WRITE", "topic", unpublished),
            Grant("materializer", "READ", "topic", unpublished),
            Grant("materializer", "WRITE", "topic", f"{unpublished}-dlq"),
            Grant("materializer", "DESCRIBE", "topic", f"{unpublished}-checkpoints"),
            Grant("producer", "WRITE", "topic", topic),
            Grant("materializer", "READ", "topic", topic),
            Grant("materializer", "READ", "group", group),
            Grant("materializer", "WRITE", "topic", f"{topic}-dlq"),
            Grant("materializer", "WRITE", "topic", f"{topic}-checkpoints"),
            Grant("alerter", "READ", "topic", topic),
            Grant("alerter", "READ", "group", alerter_group),
            Grant("alerter", "DESCRIBE", "topic", f"{topic}-dlq"),
            Grant("alerter", "WRITE", "topic", f"{topic}-alerts"),
            Grant("alerter", "READ", "topic", f"{topic}-alerts"),
            Grant("alerter", "READ", "group", "secureml-alerter-readback-", prefixed=True),
            Grant("reader", "READ", "topic", topic),
            Grant("reader", "READ", "group", reader_prefix, prefixed=True),
        ]
        passwords = provision(broker, ["producer", "materializer", "alerter", "reader"],
                              {topic: 3, f"{topic}-dlq": 1, f"{topic}-checkpoints": 1, f"{topic}-alerts": 3,
                               unpublished: 1, f"{unpublished}-dlq": 1, f"{unpublished}-checkpoints": 1}, grants)
        made = Cluster(broker, topic, group, alerter_group, reader_prefix, passwords)
        for user in passwords:
            wait_until_authenticates(broker, made.settings(user), topic)
        yield made
    finally:
        from secureml.audit.transports import factory

        factory._close_all()  # the trails' producers, while their broker still answers (or they retry until exit)
        broker.stop()


def _log_events(cluster: Cluster, tmp_path: Path, user: str, topic: str, count: int) -> AuditTrail:
    """A trail of ``user`` that logged ``count`` events to ``topic`` (not closed yet)."""
    trail = AuditTrail(f"security-{user}", log_dir=tmp_path / "producer", bootstrap_servers=cluster.bootstrap,
                       topic=topic, producer_config=cluster.settings(user), user="alice")
    for i in range(count):
        trail.log_data_access(dataset_name=f"patients-{i}", columns_accessed=["age"], num_records=i,
                              purpose="treatment")
    return trail


def _refused_write(cluster: Cluster, tmp_path: Path, user: str, topic: str) -> AuditTransportError:
    """What a trail of ``user`` writing where it may not raises: at construction when the topic is
    invisible to it (no DESCRIBE, no CREATE), else from close() with every event failed."""
    with pytest.raises(AuditTransportError) as caught:
        trail = _log_events(cluster, tmp_path, user, topic, 3)
        trail.close(timeout=WAIT_S)
    if isinstance(caught.value, AuditDeliveryError):
        report = caught.value.report  # (after a fatal error, one event may stay pending: see KafkaTransport._raised)
        assert report.failed > 0 and report.delivered == 0 and report.failed + report.pending == report.sent, report
    return caught.value


def test_secure_start_prints_what_clients_need_and_status_repeats_it(cluster: Cluster):
    """start --secure prints KEY=VALUE client settings before the address; status prints the same."""
    client = cluster.broker.client
    assert cluster.bootstrap == f"127.0.0.1:{cluster.broker.port}"
    assert client["KAFKA_LOCAL_SECURITY"] == "sasl_ssl"
    assert client["KAFKA_LOCAL_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert Path(client["KAFKA_LOCAL_CA_FILE"]).read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert Path(client["KAFKA_LOCAL_ADMIN_PASSWORD_FILE"]).stat().st_mode & 0o077 == 0, "password file is owner-only"
    assert Path(client["KAFKA_LOCAL_ADMIN_CONFIG"]).stat().st_mode & 0o077 == 0
    status = cluster.broker.run("status", timeout=60)
    assert status.returncode == 0, status.stdout + status.stderr
    lines = status.stdout.strip().splitlines()
    assert lines[-1] == cluster.bootstrap
    assert dict(line.split("=", 1) for line in lines[1:-1]) == client


def test_producer_writes_the_audit_topic(cluster: Cluster, tmp_path: Path):
    """The producer principal's AuditTrail (producer_config with TLS + SCRAM) stores its events."""
    trail = _log_events(cluster, tmp_path, "producer", cluster.topic, 5)
    report = trail.close(timeout=WAIT_S)
    stored = [v for v in cluster.admin_read(cluster.topic) if trail.operation_id.encode() in v]
    record("producer", "write audit topic (AuditTrail)", "allowed" if report.ok and len(stored) >= 5 else "refused",
           f"{report.delivered} delivered, {len(stored)} read back by admin")
    assert report.delivered == report.sent


@pytest.mark.parametrize("which", ["dlq", "checkpoints"])
def test_producer_cannot_write_the_other_topics(cluster: Cluster, tmp_path: Path, which: str):
    """The producer may write only the audit topic: the DLQ and checkpoint topics refuse it, by name."""
    topic = cluster.dlq if which == "dlq" else cluster.checkpoints
    message = str(_refused_write(cluster, tmp_path, "producer", topic))
    assert "User:producer" in message and "TOPIC_AUTHORIZATION_FAILED" in message
    assert f"on topic '{topic}'" in message and "WRITE" in message
    assert not [v for v in cluster.admin_read(topic) if b"security-producer" in v]
    record("producer", f"write {'DLQ' if which == 'dlq' else 'checkpoint'} topic (AuditTrail)", "refused", message)


def test_producer_cannot_read_the_audit_topic(cluster: Cluster):
    """A consumer with the producer's credentials is refused (group and topic READ are missing)."""
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, **cluster.settings("producer"),
                         "group.id": f"{cluster.reader_group_prefix}{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest"})
    refusal: KafkaError | None = None
    received = 0
    try:
        consumer.subscribe([cluster.topic])
        deadline = time.monotonic() + WAIT_S
        while refusal is None and time.monotonic() < deadline:
            for msg in consumer.consume(100, timeout=1):
                err = msg.error()
                if err is None:
                    received += 1
                elif err.code() in (KafkaError.GROUP_AUTHORIZATION_FAILED, KafkaError.TOPIC_AUTHORIZATION_FAILED):
                    refusal = err
    finally:
        consumer.close()
    assert received == 0
    record("producer", "read audit topic (Consumer)", "refused" if refusal is not None else "allowed",
           refusal.str() if refusal is not None else f"no refusal within {WAIT_S:.0f}s")


def test_producer_cannot_create_topics(cluster: Cluster):
    """ensure_topic of a topic the producer may not see or create names CREATE as what is missing."""
    config = resolve_config(bootstrap_servers=cluster.bootstrap, topic=f"{cluster.topic}-new",
                            producer_config=cluster.settings("producer"))
    with pytest.raises(AuditTransportError) as caught:
        ensure_topic(config)
    message = str(caught.value)
    assert "User:producer" in message and f"CREATE on topic '{cluster.topic}-new'" in message
    assert f"{cluster.topic}-new" not in cluster.broker.admin().list_topics(timeout=WAIT_S).topics
    record("producer", "create a topic (ensure_topic)", "refused", message)


def test_materializer_reads_and_writes_dlq_and_checkpoints(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The materializer principal (SECUREML_AUDIT_KAFKA_* settings) fills the lake, dead-letters
    a bad message into the DLQ and publishes a signed checkpoint; get_audit_logs reads the events."""
    trail = _log_events(cluster, tmp_path, "producer", cluster.topic, 4)
    assert trail.close(timeout=WAIT_S).ok
    poison = b"\x7f not an audit event " + uuid.uuid4().hex.encode()
    admin_producer = Producer({"bootstrap.servers": cluster.bootstrap, **cluster.broker.admin_settings()})
    admin_producer.produce(cluster.topic, poison, b"poison")
    assert admin_producer.flush(WAIT_S) == 0
    if not default_key_path().exists():
        generate_key(default_key_path())
    monkeypatch.setenv("SECUREML_AUDIT_CHECKPOINT_INTERVAL", "0")
    cluster.env(monkeypatch, "materializer")
    log_dir = tmp_path / "lake-owner"

    stats = materialize(log_dir, bootstrap_servers=cluster.bootstrap, topic=cluster.topic, group=cluster.group,
                        once=True)

    events = get_audit_logs(operation_id=trail.operation_id, log_dir=log_dir, event_type="data_access")
    record("materializer", "read audit topic in its group (materialize)", "allowed" if len(events) == 4 else "refused",
           f"{stats.events} events materialised; get_audit_logs finds {len(events)} of this trail")
    dead = cluster.admin_read(cluster.dlq)
    record("materializer", "write DLQ topic (materialize)", "allowed" if poison in dead else "refused",
           f"{stats.dead_letters} dead letter(s); the poison message is in {cluster.dlq}: {poison in dead}")
    checkpoints = cluster.admin_read(cluster.checkpoints)
    record("materializer", "write checkpoint topic (materialize)", "allowed" if checkpoints else "refused",
           f"{len(checkpoints)} signed checkpoint(s) in {cluster.checkpoints}")
    assert [e["dataset_name"] for e in events] == [f"patients-{i}" for i in range(4)]


def test_materializer_cannot_write_the_audit_topic(cluster: Cluster, tmp_path: Path):
    """Reading the audit topic does not let the materializer forge events in it."""
    error = _refused_write(cluster, tmp_path, "materializer", cluster.topic)
    message = str(error)
    assert isinstance(error, AuditDeliveryError), "the materializer sees the topic: the refusal comes with the events"
    assert "User:materializer" in message and f"WRITE on topic '{cluster.topic}'" in message
    record("materializer", "write audit topic (AuditTrail)", "refused", message)


def test_materializer_is_refused_a_group_it_has_no_acl_for(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """READ on the topic is not enough: another group stops the materializer with the ACL to grant."""
    cluster.env(monkeypatch, "materializer")
    began = time.monotonic()
    with pytest.raises(AuditTransportError) as caught:
        materialize(tmp_path / "lake", bootstrap_servers=cluster.bootstrap, topic=cluster.topic,
                    group="someone-elses-group", once=True)
    message = str(caught.value)
    assert "User:materializer" in message and "GROUP_AUTHORIZATION_FAILED" in message
    assert "READ on group 'someone-elses-group'" in message
    record("materializer", "read in a group it has no ACL for (materialize)", "refused",
           f"after {time.monotonic() - began:.0f}s: {message}")


def test_alerter_reads_the_audit_topic_and_publishes_alerts(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The alerter principal turns a data access without a purpose into an alert on its topic."""
    trail = AuditTrail("security-alerter", log_dir=tmp_path / "producer", bootstrap_servers=cluster.bootstrap,
                       topic=cluster.topic, producer_config=cluster.settings("producer"), user="alice")
    trail.log_data_access(dataset_name="patients", columns_accessed=["age"], num_records=3, purpose=None)
    assert trail.close(timeout=WAIT_S).ok
    cluster.env(monkeypatch, "alerter")

    stats = Alerter(log_dir=tmp_path / "alerter", bootstrap_servers=cluster.bootstrap, topic=cluster.topic,
                    alerts_topic=cluster.alerts, group=cluster.alerter_group).run(once=True)

    mine = [v for v in cluster.admin_read(cluster.alerts) if trail.operation_id.encode() in v]
    record("alerter", "read audit topic, publish alerts (Alerter)", "allowed" if mine else "refused",
           f"{stats.events} events read, {stats.alerts} alert(s) published, {len(mine)} about this trail")
    assert any(b"access_without_purpose" in v for v in mine)


def test_alerter_cannot_write_the_audit_topic(cluster: Cluster, tmp_path: Path):
    """Writing alerts does not let the alerter write audit events."""
    error = _refused_write(cluster, tmp_path, "alerter", cluster.topic)
    message = str(error)
    assert isinstance(error, AuditDeliveryError)
    assert "User:alerter" in message and f"WRITE on topic '{cluster.topic}'" in message
    record("alerter", "write audit topic (AuditTrail)", "refused", message)


def test_reader_reads_the_audit_topic(cluster: Cluster, tmp_path: Path):
    """The reader principal consumes the audit topic in a group under its prefix."""
    trail = _log_events(cluster, tmp_path, "producer", cluster.topic, 2)
    assert trail.close(timeout=WAIT_S).ok
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, **cluster.settings("reader"),
                         "group.id": f"{cluster.reader_group_prefix}{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    mine = 0
    errors: list[str] = []
    try:
        consumer.subscribe([cluster.topic])
        deadline = time.monotonic() + WAIT_S
        while mine < 2 and time.monotonic() < deadline:
            for msg in consumer.consume(100, timeout=1):
                err = msg.error()
                if err is not None:
                    errors.append(err.str())
                elif trail.operation_id.encode() in (msg.value() or b""):
                    mine += 1
    finally:
        consumer.close()
    record("reader", "read audit topic (Consumer)", "allowed" if mine >= 2 else "refused",
           f"read {mine} events of the new trail; errors: {errors[:2]}")


def test_reader_cannot_write_the_audit_topic(cluster: Cluster, tmp_path: Path):
    """A principal that may write nowhere gets no idempotent producer id: every event fails, by name."""
    error = _refused_write(cluster, tmp_path, "reader", cluster.topic)
    message = str(error)
    assert isinstance(error, AuditDeliveryError), "the reader sees the topic: the refusal comes with the events"
    assert "User:reader" in message and "CLUSTER_AUTHORIZATION_FAILED" in message
    assert f"WRITE on topic '{cluster.topic}'" in message
    record("reader", "write audit topic (AuditTrail)", "refused", message)


def test_reader_cannot_write_the_dlq(cluster: Cluster):
    """A plain, non-idempotent producer of the reader is refused the DLQ too."""
    failures: list[KafkaError | None] = []
    producer = Producer({"bootstrap.servers": cluster.bootstrap, **cluster.settings("reader"),
                         "enable.idempotence": False, "message.timeout.ms": int(WAIT_S * 1000)})
    producer.produce(cluster.dlq, b"forged", b"k", on_delivery=lambda err, _msg: failures.append(err))
    assert producer.flush(WAIT_S) == 0
    failure = failures[0] if failures else None
    refused = failure is not None and failure.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    record("reader", "write DLQ topic (Producer)", "refused" if refused else "allowed",
           failure.str() if failure is not None else "delivered")


def test_reader_cannot_run_the_materializer(cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """With the reader's credentials the materializer stops at once, naming the topic it may not use."""
    cluster.env(monkeypatch, "reader")
    with pytest.raises(AuditTransportError) as caught:
        materialize(tmp_path / "reader-lake", bootstrap_servers=cluster.bootstrap, topic=cluster.topic,
                    group=f"{cluster.reader_group_prefix}materializer", once=True)
    message = str(caught.value)
    assert "User:reader" in message and cluster.dlq in message
    record("reader", "run the materializer (materialize)", "refused", message)


@pytest.mark.parametrize(
    ("who", "settings_of"),
    [
        ("anonymous (TLS, no SASL)", lambda c: {"security.protocol": "SSL", "ssl.ca.location": c.broker.ca_file}),
        ("anonymous (plaintext)", lambda c: {}),
        ("producer, wrong password", lambda c: c.settings("producer", "not-the-password")),
        ("unknown user", lambda c: c.broker.settings("mallory", "guess")),
    ],
)
def test_unauthenticated_clients_are_refused(cluster: Cluster, tmp_path: Path, who: str, settings_of):
    """Clients without valid credentials get an AuditTransportError at once (bounded), nothing stored."""
    began = time.monotonic()
    with pytest.raises(AuditTransportError) as caught:
        AuditTrail("intruder", log_dir=tmp_path, bootstrap_servers=cluster.bootstrap, topic=cluster.topic,
                   producer_config=settings_of(cluster))
    message = str(caught.value)
    assert cluster.bootstrap in message
    if "SASL_SSL" in str(settings_of(cluster)):
        assert "refused the connection" in message and "sasl.password" in message
    else:
        assert "security.protocol" in message
    record(who, "connect (AuditTrail)", "refused", f"after {time.monotonic() - began:.0f}s: {message}")


def test_wrong_password_fails_the_events_when_the_topic_is_not_checked(cluster: Cluster, tmp_path: Path):
    """create_topic=False skips the metadata check: the events then fail, with the reason, not after 5 min."""
    config = resolve_config(bootstrap_servers=cluster.bootstrap, topic=cluster.topic,
                            producer_config=cluster.settings("producer", "not-the-password"))
    transport = KafkaTransport(config, create_topic=False)
    trail = AuditTrail("intruder", log_dir=tmp_path, transport=transport)
    trail.log_data_access(dataset_name="x", columns_accessed=["a"], num_records=1, purpose="p")
    try:
        with pytest.raises(AuditDeliveryError) as caught:
            trail.close(timeout=WAIT_S)
    finally:
        transport.close(1)
    message = str(caught.value)
    assert caught.value.report.failed >= 1 and "refused the connection of User:producer" in message
    assert isinstance(caught.value, AuditError)
    record("producer, wrong password", "write, topic not checked (KafkaTransport create_topic=False)", "refused",
           message)


def test_a_checkpoint_topic_without_write_is_named_and_the_lake_keeps_the_checkpoint(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    """The materializer lacking WRITE on a checkpoints topic stores every event and the signed checkpoint,
    and says which principal needs which ACL (CheckpointPublishError, logged), in bounded time."""
    topic = f"{cluster.topic}-nocp"
    trail = _log_events(cluster, tmp_path, "producer", topic, 3)
    assert trail.close(timeout=WAIT_S).ok
    if not default_key_path().exists():
        generate_key(default_key_path())
    monkeypatch.setenv("SECUREML_AUDIT_CHECKPOINT_INTERVAL", "0")
    cluster.env(monkeypatch, "materializer")
    log_dir = tmp_path / "lake-nocp"
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="secureml.integrity.checkpointer"):
        stats = materialize(log_dir, bootstrap_servers=cluster.bootstrap, topic=topic, group=cluster.group, once=True)
    took = time.monotonic() - began
    refusals = [r.getMessage() for r in caplog.records if "was not published" in r.getMessage()]
    assert refusals, [r.getMessage() for r in caplog.records]
    message = refusals[0]
    record("materializer", "write a checkpoint topic it has no WRITE on (materialize)", "refused",
           f"after {took:.0f}s, {stats.events} events stored: {message}")
    assert "User:materializer" in message and f"WRITE on topic '{topic}-checkpoints'" in message
    assert stats.events == 5 and stats.signed and took < 60
    assert checkpoint_files(Lake(log_dir).root), "the lake keeps the signed checkpoint it could not publish"
    assert cluster.admin_read(f"{topic}-checkpoints") == []


def _alert() -> Alert:
    """One alert, as the alerter would publish it."""
    trigger = Trigger("op-acl", 1, "event-acl", "log/0", 0)
    return Alert(alert_id("acl", [uuid.uuid4().hex]), "access_without_purpose", "high", "GDPR", "Art. 5(1)(b)",
                 "access without a purpose", "op-acl", 1_700_000_000_000_000, 1_700_000_000_000_000, (trigger,))


@pytest.mark.parametrize(("user", "where", "operation", "needed"), [
    ("alerter", "dlq", "publish alerts to a topic it has no WRITE on (KafkaAlertRecord)", "WRITE on topic"),
    ("reader", "topic", "publish alerts, no WRITE on any topic (KafkaAlertRecord)", "idempotent producer id"),
])
def test_the_alerts_record_refused_names_the_principal_and_the_acl(
    cluster: Cluster, user: str, where: str, operation: str, needed: str
):
    """A topic ACL missing (TOPIC_AUTHORIZATION_FAILED) or no WRITE anywhere (a fatal CLUSTER_AUTHORIZATION_FAILED
    for the idempotent producer) fails the alerts record's flush with AlertDeliveryError naming both, bounded."""
    topic = cluster.dlq if where == "dlq" else cluster.topic  # the principal may DESCRIBE it, not WRITE it
    config = resolve_config(bootstrap_servers=cluster.bootstrap, topic=cluster.topic,
                            producer_config=cluster.settings(user))
    record_ = KafkaAlertRecord(config, topic)
    began = time.monotonic()
    try:
        record_.add(_alert())
        with pytest.raises(AlertDeliveryError) as caught:
            record_.flush()
        took = time.monotonic() - began
        record_.add(_alert())  # once refused for good, the next flush fails as clearly, not after a timeout
        with pytest.raises(AlertDeliveryError) as again:
            record_.flush()
    finally:
        record_.close()
    message = str(caught.value)
    record(user, operation, "refused", f"after {took:.0f}s: {message}")
    assert isinstance(caught.value, AuditError)
    assert f"User:{user}" in message and needed in message and f"WRITE on topic '{topic}'" in message
    assert f"User:{user}" in str(again.value)
    assert took < 60
    assert not [v for v in cluster.admin_read(topic) if b"op-acl" in v]


def test_acl_matrix(capsys: pytest.CaptureFixture[str]):
    """Prints the ACL matrix (principal x operation, expected vs seen); every cell was exercised."""
    with capsys.disabled():
        print("\n\nKafka ACL matrix (TLS + SASL/SCRAM-SHA-512, StandardAuthorizer)\n" + matrix_table(MATRIX) + "\n")
    seen = {(row.principal, row.operation) for row in MATRIX}
    assert seen == set(EXPECTED), f"cells not exercised: {sorted(set(EXPECTED) - seen)}"
    assert all(row.seen == row.expected for row in MATRIX)
