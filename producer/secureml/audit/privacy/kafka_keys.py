"""The Kafka deployments' key store: wrapped keys in a compacted topic ``<topic>-keys``.

Record key = the subject's pseudonym (or ``pseudonym-key``), value = the key wrapped under the
key-encryption key (``SECUREML_AUDIT_KEK``: every producer and reader host needs the same one);
erasure = a tombstone. The topic is compacted with ``segment.ms`` and ``max.compaction.lag.ms``
of one hour each, so the log cleaner removes an erased key's record from the broker's disks
within about two hours of the tombstone (README, "Privacy by design"); the tombstone itself
goes ``delete.retention.ms`` (one hour) later.

When two producers create a key for the same subject at once, the first record after the last
tombstone wins: a producer that reads back another's record uses it and writes it again, so
compaction keeps the winner.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from secureml.audit.config import AuditConfig
from secureml.audit.exceptions import AuditTransportError
from secureml.audit.privacy.keys import PSEUDONYM_KEY_NAME, SubjectKey, Wrapper, keystore_dir, load_kek

TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    "segment.ms": "3600000",
    "max.compaction.lag.ms": "3600000",
    "min.cleanable.dirty.ratio": "0.01",
    "delete.retention.ms": "3600000",
}
_WAIT = 15.0
# Errors of a topic created a moment ago, until its partition has a leader in this client's metadata: wait them out.
_NOT_READY_YET = frozenset({KafkaError._UNKNOWN_PARTITION, KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC,
                            KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE})


class KafkaKeyStore:
    """Wrapped keys in a compacted Kafka topic (one partition, so every key has one order)."""

    def __init__(self, bootstrap_servers: str, topic: str, settings: dict[str, Any] | None = None) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self._settings = {"bootstrap.servers": bootstrap_servers, **(settings or {})}
        self._lock = threading.Lock()
        self._wrapper: Wrapper | None = None
        self._producer: Producer | None = None
        self._first: dict[str, bytes] = {}  # name -> first value since its last tombstone
        self._loaded = False
        self._consumer: Consumer | None = None
        self._next = 0  # the next offset to read

    def _wrap(self) -> Wrapper:
        if self._wrapper is None:
            from secureml.audit.transports.kafka import ensure_topic

            ensure_topic(AuditConfig(bootstrap_servers=self.bootstrap_servers, producer_config=tuple(
                (k, str(v)) for k, v in self._settings.items() if k != "bootstrap.servers")),
                self.topic, partitions=1, topic_config=TOPIC_CONFIG)
            self._wrapper = Wrapper(load_kek(keystore_dir()))
        return self._wrapper

    def _read(self) -> None:
        """Read the topic on from where the last read stopped: the first value of each key since its last
        tombstone (one consumer kept per store, so a new subject costs only the records added since)."""
        if self._consumer is None:
            # Short fetch waits: a new subject waits for its own record to come back, not for a long poll.
            self._consumer = Consumer({**self._settings, "group.id": f"secureml-keys-{uuid.uuid4()}",
                                       "enable.auto.commit": False, "enable.partition.eof": True,
                                       "fetch.wait.max.ms": 5})
            self._consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
        else:
            self._consumer.resume([TopicPartition(self.topic, 0)])
        consumer = self._consumer
        try:
            deadline = time.monotonic() + _WAIT
            high = self._high_watermark(consumer, deadline)
            while self._next < high:
                if time.monotonic() > deadline:
                    raise AuditTransportError(f"could not read the key topic {self.topic!r} to its end within "
                                              f"{_WAIT:.0f}s: is the broker at {self.bootstrap_servers} up?")
                message = consumer.poll(0.5)
                if message is None:
                    continue
                if message.error():
                    if message.error().code() == KafkaError._PARTITION_EOF:
                        continue  # maybe from an earlier read: the high watermark says where the end is
                    if message.error().code() in _NOT_READY_YET:
                        continue  # (the client retries; the deadline bounds the wait)
                    raise AuditTransportError(f"reading the key topic {self.topic!r}: {message.error().str()}")
                self._next = message.offset() + 1
                name = message.key().decode()
                value = message.value()
                if value is None:
                    self._first.pop(name, None)
                elif name not in self._first:
                    self._first[name] = value
            self._loaded = True
            # Paused between reads: an idle consumer would otherwise fetch every fetch.wait.max.ms (5 ms) for
            # the life of the process, CPU taken from the hot path on the producer's host and the broker.
            consumer.pause([TopicPartition(self.topic, 0)])
        except KafkaException as exc:
            raise AuditTransportError(f"cannot read the key topic {self.topic!r}: {exc}") from exc

    def _high_watermark(self, consumer: Consumer, deadline: float) -> int:
        """The key topic's end; a topic created a moment ago may not be in this client's metadata yet, or its
        partition may have no leader yet (NOT_LEADER_FOR_PARTITION for a moment after creation)."""
        while True:
            try:
                return int(consumer.get_watermark_offsets(TopicPartition(self.topic, 0),
                                                          timeout=max(0.1, deadline - time.monotonic()))[1])
            except KafkaException as exc:
                code = exc.args[0].code() if exc.args and isinstance(exc.args[0], KafkaError) else None
                if code not in _NOT_READY_YET or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _write(self, name: str, value: bytes | None) -> None:
        if self._producer is None:
            self._producer = Producer({**self._settings, "acks": "all", "enable.idempotence": True,
                                       "linger.ms": 0})
        failures: list[str] = []

        def delivered(error: KafkaError | None, _message: Any) -> None:
            if error is not None:
                failures.append(error.str())

        self._producer.produce(self.topic, key=name.encode(), value=value, partition=0, on_delivery=delivered)
        if self._producer.flush(_WAIT) or failures:
            raise AuditTransportError(f"could not store a key in the topic {self.topic!r}: "
                                      f"{'; '.join(failures) or 'not acknowledged in time'}")

    def _value(self, name: str, create: bytes | None) -> bytes | None:
        with self._lock:
            self._wrap()
            if not self._loaded or name not in self._first:
                self._read()
            if name not in self._first and create is not None:
                self._write(name, create)
                self._read()
                winner = self._first.get(name)
                if winner is not None and winner != create:
                    self._write(name, winner)  # so that compaction keeps the first key
            return self._first.get(name)

    def pseudonym_key(self) -> bytes:
        wrapper = self._wrap()
        value = self._value(PSEUDONYM_KEY_NAME, wrapper.wrap(PSEUDONYM_KEY_NAME, os.urandom(32)))
        assert value is not None
        return wrapper.unwrap(PSEUDONYM_KEY_NAME, value)

    def get(self, name: str) -> SubjectKey | None:
        value = self._value(name, None)
        return None if value is None else self._wrap().unwrap_subject(name, value)

    def get_or_create(self, name: str, subject: str) -> SubjectKey:
        value = self._value(name, self._wrap().wrap_subject(name, os.urandom(32), subject))
        assert value is not None
        return self._wrap().unwrap_subject(name, value)

    def destroy(self, name: str) -> bool:
        with self._lock:
            self._wrap()
            self._read()
            existed = name in self._first
            self._write(name, None)
            self._first.pop(name, None)
            return existed
