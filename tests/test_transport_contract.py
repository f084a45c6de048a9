"""The Transport contract, run against every transport: the embedded log, Kafka, and the in-memory one.

``TransportContract`` states the behaviour once (see ``secureml.audit.transports.base``). Each
``Test*Transport`` subclass runs it against one implementation and provides three fixtures:

- ``transport``: a working transport, closed after the test;
- ``failing_transport``: one whose deliveries really fail (no mocks: a full device, a broker
  that is not there, a transport told to fail);
- ``read_stored``: a function returning the values its store holds now, in store order;

and ``expected_failure``, a piece of the reason the failing transport reports.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from conftest import unique_topic
from secureml.audit import AuditClosedError, AuditDeliveryError, AuditTrail, get_audit_logs
from secureml.audit.config import resolve_config
from secureml.audit.schema import SCHEMA_HEADER, SCHEMA_VERSION
from secureml.audit.testing import CapturingTransport, capture_events, decode_event
from secureml.audit.transports import DeliveryTracker, Transport, transport_for
from secureml.audit.transports.embedded import EmbeddedTransport, LogRecord, list_segments, read_segment
from secureml.audit.transports.kafka import KafkaTransport

ReadStored = Callable[[], list[bytes]]
TIMEOUT = 10.0  # seconds any flush, close or read-back may take before the test fails


def emit_interleaved(
    transport: Transport, keys: int, per_key: int
) -> tuple[dict[bytes, DeliveryTracker], list[tuple[bytes, bytes]]]:
    """Emit ``per_key`` events for each of ``keys`` keys, round robin, one tracker per key.

    Returns the trackers by key and every emitted (key, value) in emit order; values are unique.
    """
    run = uuid.uuid4().hex[:8]
    trackers = {f"op-{run}-{k}".encode(): DeliveryTracker() for k in range(keys)}
    emitted = []
    for i in range(per_key):
        for key, tracker in trackers.items():
            value = key + f":{i}".encode()
            transport.emit(key, value, tracker)
            emitted.append((key, value))
    return trackers, emitted


class TransportContract:
    """What every Transport promises; not collected itself, only through its subclasses."""

    expected_failure: str

    def test_flush_settles_every_emitted_event(self, transport: Transport) -> None:
        """After flush, every tracker reports sent == delivered, nothing failed, nothing pending."""
        trackers, _ = emit_interleaved(transport, keys=3, per_key=20)
        transport.flush(TIMEOUT)
        for tracker in trackers.values():
            report = tracker.report()
            assert report.sent == report.delivered == 20
            assert report.failed == 0 and report.pending == 0 and report.ok

    def test_store_holds_exactly_what_was_emitted(self, transport: Transport, read_stored: ReadStored) -> None:
        """After flush, the store holds every emitted value once, unchanged: none lost, none added."""
        _, emitted = emit_interleaved(transport, keys=3, per_key=20)
        transport.flush(TIMEOUT)
        assert sorted(read_stored()) == sorted(value for _, value in emitted)

    def test_events_of_one_key_keep_their_order(self, transport: Transport, read_stored: ReadStored) -> None:
        """Events of one key are stored in the order they were emitted, whatever other keys do."""
        _, emitted = emit_interleaved(transport, keys=4, per_key=50)
        transport.flush(TIMEOUT)
        key_of = {value: key for key, value in emitted}
        stored = read_stored()
        for key in {key for key, _ in emitted}:
            assert [v for v in stored if key_of[v] == key] == [v for k, v in emitted if k == key]

    def test_flush_with_nothing_emitted_returns_at_once(self, transport: Transport) -> None:
        """flush on a transport that took no event returns without waiting out its timeout."""
        started = time.monotonic()
        transport.flush(TIMEOUT)
        assert time.monotonic() - started < TIMEOUT / 2

    def test_close_flushes_then_refuses_events(self, transport: Transport, read_stored: ReadStored) -> None:
        """close stores what was emitted; afterwards a trail on the transport raises AuditClosedError."""
        trail = AuditTrail("contract_close", transport=transport)
        trail.log_data_access("patients", ["age"], 10, "contract test")
        transport.close(TIMEOUT)
        assert transport.closed
        assert trail.flush(TIMEOUT).ok
        assert [decode_event(v)["event_type"] for v in read_stored()] == ["audit_started", "data_access"]
        with pytest.raises(AuditClosedError, match="is closed"):
            trail.log_data_access("patients", ["age"], 10, "after close")
        with pytest.raises(AuditClosedError, match="is closed"):
            AuditTrail("contract_after_close", transport=transport)
        transport.close(TIMEOUT)  # closing twice is harmless (the exit hook closes every transport)

    def test_flush_reports_failed_deliveries(self, failing_transport: Transport) -> None:
        """On a transport whose deliveries fail, the trail's flush reports them failed, none delivered."""
        trail = AuditTrail("contract_failing_flush", transport=failing_transport)
        trail.log_data_access("patients", ["age"], 10, "contract test")
        report = trail.flush(TIMEOUT)
        assert report.sent == report.failed == 2
        assert report.delivered == 0 and report.pending == 0 and not report.ok
        assert any(self.expected_failure in error for error in report.errors), report.errors

    def test_close_raises_delivery_error_for_failed_deliveries(self, failing_transport: Transport) -> None:
        """On a transport whose deliveries fail, the trail's close raises AuditDeliveryError with the report."""
        trail = AuditTrail("contract_failing_close", transport=failing_transport)
        with pytest.raises(AuditDeliveryError, match="failed") as raised:
            trail.close(timeout=TIMEOUT)
        report = raised.value.report
        assert report.failed == report.sent == 2 and report.delivered == 0
        assert self.expected_failure in str(raised.value)
        assert trail.closed


# -- the embedded log ------------------------------------------------------------------------------


class DiskFullEmbeddedTransport(EmbeddedTransport):
    """An embedded transport whose segment is /dev/full, where every write fails with ENOSPC.

    That is the kernel's own answer for a full disk, and the transport's real write, error and
    accounting path runs; only the file it appends to differs. Tests run as root, for whom no
    chmod makes a write fail, and mounting a tiny file system to fill needs privileges CI lacks.
    """

    def _create_segment_file(self) -> int:
        return os.open("/dev/full", os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)


def running_threads() -> int:
    """Threads of this process, librdkafka's included."""
    return len(os.listdir("/proc/self/task"))


def open_files() -> set[Path]:
    """Paths of the files this process holds open."""
    paths = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            paths.add(Path(os.readlink(f"/proc/self/fd/{fd}")))
        except OSError:  # the descriptor listing the directory itself is gone already
            continue
    return paths


class TestEmbeddedTransport(TransportContract):
    """The contract on the embedded log: segment files under log_dir/log."""

    expected_failure = "No space left on device"

    @pytest.fixture
    def log_dir(self, tmp_path: Path) -> Path:
        """The log directory of the transport under test."""
        return tmp_path / "audit_logs"

    @pytest.fixture
    def transport(self, log_dir: Path) -> Iterator[EmbeddedTransport]:
        """An embedded transport of its own, closed after the test."""
        transport = EmbeddedTransport(log_dir)
        yield transport
        transport.close(TIMEOUT)

    @pytest.fixture
    def failing_transport(self, tmp_path: Path) -> Iterator[EmbeddedTransport]:
        """An embedded transport whose disk is full (see DiskFullEmbeddedTransport)."""
        transport = DiskFullEmbeddedTransport(tmp_path / "full_disk_logs")
        yield transport
        transport.close(TIMEOUT)

    @pytest.fixture
    def read_stored(self, log_dir: Path) -> ReadStored:
        """Values of every record in the log's segments, segment by segment."""

        def read() -> list[bytes]:
            records = [record for segment in list_segments(log_dir) for record in read_segment(segment)]
            assert all(isinstance(record, LogRecord) for record in records), records
            return [record.value for record in records if isinstance(record, LogRecord)]

        return read

    def test_close_releases_the_segment_file(self, transport: EmbeddedTransport, log_dir: Path) -> None:
        """close closes the segment file the transport was appending to."""
        AuditTrail("contract_release", transport=transport)
        (segment,) = list_segments(log_dir)
        assert segment in open_files()
        transport.close(TIMEOUT)
        assert segment not in open_files()


# -- Kafka -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredMessage:
    """One message read back from Kafka."""

    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, str | bytes | None], ...]


def read_topic(bootstrap: str, topic: str) -> list[StoredMessage]:
    """Every message of a topic, from the beginning up to its current end (each partition in offset order).

    A plain consumer with a group of its own reads each partition up to the high watermark taken
    when it starts, so the result is the topic's whole content, without waiting for stragglers.
    """
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"contract-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    try:
        partitions = consumer.list_topics(topic, timeout=TIMEOUT).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=TIMEOUT)[1] for p in partitions}
        unread = {partition: end for partition, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING) for partition in unread])
        messages: list[StoredMessage] = []
        deadline = time.monotonic() + TIMEOUT
        while unread and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            value, headers = message.value(), message.headers() or []
            assert message.error() is None and isinstance(value, bytes) and isinstance(headers, list), message
            messages.append(StoredMessage(message.key(), value, tuple(headers)))
            partition, offset = message.partition(), message.offset()
            if partition is not None and offset is not None and offset + 1 >= unread.get(partition, 0):
                unread.pop(partition, None)
        assert not unread, f"partitions {sorted(unread)} of {topic} not read to their end within {TIMEOUT}s"
        return messages
    finally:
        consumer.close()


class TestKafkaTransport(TransportContract):
    """The contract on Kafka: a real broker, a fresh topic per test."""

    expected_failure = "Message timed out"

    @pytest.fixture
    def transport(self, kafka_bootstrap: str, tmp_path: Path) -> Iterator[KafkaTransport]:
        """A Kafka transport on a new three-partition topic, closed after the test."""
        config = resolve_config(
            log_dir=tmp_path, bootstrap_servers=kafka_bootstrap, topic=unique_topic("contract"), partitions=3
        )
        transport = KafkaTransport(config)
        yield transport
        transport.close(TIMEOUT)

    @pytest.fixture
    def failing_transport(self, tmp_path: Path) -> Iterator[KafkaTransport]:
        """A Kafka transport aimed at a port where no broker listens: every delivery times out.

        The port is bound but never listened on, so each connection is refused, as by a host
        whose broker is down, and no other process can take the port meanwhile. librdkafka
        really tries, fails, and reports _MSG_TIMED_OUT once message.timeout.ms (2 s here,
        5 min by default) is over. create_topic=False: there is no broker to create it on.
        """
        with socket.socket() as unused_port:
            unused_port.bind(("127.0.0.1", 0))
            config = resolve_config(
                log_dir=tmp_path,
                bootstrap_servers=f"127.0.0.1:{unused_port.getsockname()[1]}",
                topic=unique_topic("contract-unreachable"),
                producer_config={"message.timeout.ms": 2000},
            )
            transport = KafkaTransport(config, create_topic=False)
            yield transport
            transport.close(0)

    @pytest.fixture
    def read_stored(self, transport: KafkaTransport, kafka_bootstrap: str) -> ReadStored:
        """Values of every message in the transport's topic, each partition in offset order."""
        return lambda: [message.value for message in read_topic(kafka_bootstrap, transport.config.topic)]

    def test_close_ends_the_producer_threads(self, transport: KafkaTransport) -> None:
        """close destroys the librdkafka handle: the threads it ran are gone afterwards."""
        AuditTrail("contract_release", transport=transport)
        threads_open = running_threads()
        transport.close(TIMEOUT)
        assert running_threads() < threads_open

    def test_an_event_the_producer_refuses_is_counted_failed(self, transport: KafkaTransport) -> None:
        """An event librdkafka refuses at once (over message.max.bytes) is counted failed, not raised."""
        tracker = DeliveryTracker()
        transport.emit(b"op-too-large", b"x" * 2_000_000, tracker)
        report = tracker.report()
        assert (report.sent, report.failed, report.pending) == (1, 1, 0)
        assert "MSG_SIZE_TOO_LARGE" in report.errors[0]

    def test_messages_carry_the_key_and_the_schema_version(
        self, transport: KafkaTransport, kafka_bootstrap: str
    ) -> None:
        """Each message is keyed by its trail's key and names its writer schema version in a header."""
        _, emitted = emit_interleaved(transport, keys=3, per_key=5)
        transport.flush(TIMEOUT)
        messages = read_topic(kafka_bootstrap, transport.config.topic)
        assert sorted((m.key, m.value) for m in messages) == sorted(emitted)
        assert {m.headers for m in messages} == {((SCHEMA_HEADER, str(SCHEMA_VERSION).encode()),)}


# -- the in-memory transport of secureml.audit.testing ---------------------------------------------


class TestCapturingTransport(TransportContract):
    """The contract on CapturingTransport, plus what the testing helper adds."""

    expected_failure = "disk full"

    @pytest.fixture
    def transport(self) -> CapturingTransport:
        """A capturing transport that delivers everything."""
        return CapturingTransport()

    @pytest.fixture
    def failing_transport(self) -> CapturingTransport:
        """A capturing transport that fails every delivery with the reason 'disk full'."""
        return CapturingTransport(fail_with="disk full")

    @pytest.fixture
    def read_stored(self, transport: CapturingTransport) -> ReadStored:
        """Values the transport counted delivered, in emit order."""
        return lambda: [value for _, value in transport.stored]

    def test_capture_events_yields_decoded_events(self) -> None:
        """capture_events gives a transport for AuditTrail and its events as dicts, in order."""
        with capture_events() as captured:
            audit = AuditTrail("capture", transport=captured.transport, context={"run": 7})
            audit.log_model_training("logistic_regression", "patients", {"C": 1.0})
            audit.close()
        events = captured.events
        assert [e["event_type"] for e in events] == ["audit_started", "model_training", "audit_closed"]
        assert events[1]["parameters"] == {"C": 1.0} and events[1]["context"] == {"run": 7}
        assert [e["seq"] for e in events] == [0, 1, 2] and events[2]["event_count"] == 3
        assert captured.transport.closed

    def test_fail_after_lets_the_first_events_through(self) -> None:
        """fail_after=n stores the first n events and fails the rest, naming the option."""
        with capture_events(fail_after=2) as captured:
            audit = AuditTrail("fail_after", transport=captured.transport)
            audit.log_data_access("patients", ["age"], 10, "contract test")
            with pytest.raises(AuditDeliveryError, match="fail_after=2") as raised:
                audit.close()
        assert (raised.value.report.delivered, raised.value.report.failed) == (2, 1)
        assert len(captured.transport.emitted) == 3
        assert [e["event_type"] for e in captured.events] == ["audit_started", "data_access"]

    def test_decoded_events_are_shaped_like_get_audit_logs(self, tmp_path: Path) -> None:
        """decode_event turns a stored event into the very dict get_audit_logs returns for it."""
        log_dir = tmp_path / "audit_logs"
        with AuditTrail("shape", log_dir=log_dir, regulations=["GDPR"], user="ana") as audit:
            audit.log_data_access("patients", ["age", "zip"], 10, "contract test")
            audit.log_model_inference("m-1", "request-1", {"label": 1}, 0.9)
            audit.log_event("custom.step", {"k": [1, 2]})
        stored = [r.value for s in list_segments(log_dir) for r in read_segment(s) if isinstance(r, LogRecord)]
        assert [decode_event(value) for value in stored] == get_audit_logs(log_dir=log_dir)


# -- the factory -----------------------------------------------------------------------------------


def test_transport_for_shares_one_transport_per_configuration(tmp_path: Path) -> None:
    """transport_for gives one transport per configuration, and a new one once that was closed."""
    config = resolve_config(log_dir=tmp_path / "audit_logs")
    first = transport_for(config)
    assert isinstance(first, EmbeddedTransport)
    assert transport_for(resolve_config(log_dir=tmp_path / "audit_logs")) is first
    assert transport_for(resolve_config(log_dir=tmp_path / "other_logs")) is not first
    first.close(TIMEOUT)
    assert transport_for(config) is not first


def test_transport_for_picks_kafka_when_bootstrap_servers_are_set(kafka_bootstrap: str, tmp_path: Path) -> None:
    """A configuration with bootstrap servers gets a KafkaTransport on its topic."""
    config = resolve_config(log_dir=tmp_path, bootstrap_servers=kafka_bootstrap, topic=unique_topic("contract"))
    transport = transport_for(config)
    assert isinstance(transport, KafkaTransport) and transport.config.topic == config.topic
    transport.close(TIMEOUT)
