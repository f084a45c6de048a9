"""Kafka transport: one message per event, key = operation_id, idempotent, acks=all."""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from secureml.audit.config import AuditConfig
from secureml.audit.exceptions import AuditTransportError
from secureml.audit.schema import SCHEMA_HEADER, SCHEMA_VERSION
from secureml.audit.transports.base import DeliveryTracker, Transport

_HEADERS: list[tuple[str, str | bytes | None]] = [(SCHEMA_HEADER, str(SCHEMA_VERSION).encode())]

# Durability first (acks=all + idempotence: no loss, no duplicates on retry), then throughput.
PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "compression.type": "lz4",
    "linger.ms": 5,
    "batch.num.messages": 10000,
    "queue.buffering.max.messages": 1_000_000,
    "queue.buffering.max.kbytes": 1_048_576,
    "message.timeout.ms": 300_000,
}
# A full local queue means the broker has been unreachable for long: wait this long, then fail.
_QUEUE_FULL_WAIT = 30.0

logger = logging.getLogger(__name__)


def ensure_topic(config: AuditConfig, topic: str | None = None, *, partitions: int | None = None) -> None:
    """Create the topic if it is missing (infinite retention, never compacted)."""
    name = topic or config.topic
    admin = AdminClient({"bootstrap.servers": config.bootstrap_servers or "", **config.librdkafka_settings()})
    try:
        existing = admin.list_topics(timeout=15).topics
    except KafkaException as exc:
        raise AuditTransportError(
            f"cannot reach Kafka at {config.bootstrap_servers}: {exc}. Start a broker "
            "(scripts/kafka-local start) or unset SECUREML_AUDIT_BOOTSTRAP_SERVERS for the embedded log."
        ) from exc
    if name in existing:
        return
    new = NewTopic(
        name,
        num_partitions=partitions or config.partitions,
        replication_factor=config.replication_factor,
        config={"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"},
    )
    for future in admin.create_topics([new], operation_timeout=15).values():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise AuditTransportError(f"cannot create Kafka topic {name!r}: {exc}") from exc


class KafkaTransport(Transport):
    """Publishes events with confluent-kafka; delivery reports count every success and failure.

    One delivery callback serves the whole producer and finds the trail's tracker by message
    key (the operation_id), which is cheaper than a closure per message on the hot path.
    """

    def __init__(self, config: AuditConfig, *, create_topic: bool = True) -> None:
        """``create_topic=False`` skips checking for the topic and creating it, for clusters
        where operators provision topics and clients may not list or create them."""
        self.config = config
        if create_topic:
            ensure_topic(config)
        settings = {
            **PRODUCER_DEFAULTS,
            "bootstrap.servers": config.bootstrap_servers,
            **config.librdkafka_settings(),
            "on_delivery": self._on_delivery,
            "logger": logger,  # librdkafka's own diagnostics go to logging, not straight to stderr
        }
        self._producer = Producer(settings)
        self._produce = self._producer.produce
        self._poll = self._producer.poll
        self._topic = config.topic
        self._trackers: dict[bytes, DeliveryTracker] = {}
        self._unpolled = 0
        self._closed = False

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        tracker = self._trackers.get(msg.key())
        if tracker is None:
            return
        if err is None:
            tracker.on_delivered()
        else:
            tracker.on_failed(f"{err.name()}: {err.str()}")

    def emit(self, key: bytes, value: bytes, tracker: DeliveryTracker) -> None:
        if self._closed:
            raise self._closed_error()
        self._trackers[key] = tracker
        tracker.sent += 1
        try:
            self._produce(self._topic, value, key, headers=_HEADERS)
        except BufferError:
            self._wait_for_room(key, value, tracker)
        except KafkaException as exc:  # refused before sending (e.g. larger than message.max.bytes)
            tracker.on_failed(f"the Kafka producer refused the event: {exc}")
            return
        self._unpolled += 1
        if self._unpolled >= 64:  # serve delivery reports now and then, not on every call
            self._unpolled = 0
            self._poll(0)

    def _wait_for_room(self, key: bytes, value: bytes, tracker: DeliveryTracker) -> None:
        """The local queue is full (broker away for long): serve reports until there is room, bounded."""
        deadline = time.monotonic() + _QUEUE_FULL_WAIT
        while True:
            self._poll(0.05)
            try:
                self._produce(self._topic, value, key, headers=_HEADERS)
                return
            except BufferError:
                if time.monotonic() > deadline:
                    tracker.sent -= 1
                    raise AuditTransportError(
                        f"Kafka producer queue stayed full for {_QUEUE_FULL_WAIT:.0f}s: the broker at "
                        f"{self.config.bootstrap_servers} is not taking events. Check the broker."
                    ) from None

    def flush(self, timeout: float) -> None:
        if not self._closed:  # a closed transport's producer is gone: nothing left to wait for
            self._producer.flush(timeout)

    def release(self, key: bytes) -> None:
        self._trackers.pop(key, None)

    def close(self, timeout: float) -> None:
        if self._closed:
            return
        self._closed = True
        remaining = self._producer.flush(timeout)
        if remaining:
            logger.warning(
                "%d audit event(s) were not confirmed by Kafka at %s within %.0fs of closing the transport; "
                "they stay pending in their trails' delivery reports",
                remaining, self.config.bootstrap_servers, timeout,
            )
        # Dropping the last references destroys the librdkafka handle, which ends its threads and
        # connections (Producer.close() would do it too, but waits for every unconfirmed event).
        del self._producer, self._produce, self._poll

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return f"KafkaTransport({self.config.bootstrap_servers!r}, topic={self._topic!r})"
