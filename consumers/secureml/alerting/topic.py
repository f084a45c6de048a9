"""The record of published alerts: the Kafka topic ``audit-alerts``, or ``log_dir/alerts/alerts.jsonl``.

Besides taking alerts like a sink, the record can say which alert ids were published after
given positions: after a restart, the alerter skips the alerts that a previous run published
after its last checkpoint, so no alert is published twice and none is lost.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from abc import abstractmethod
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from secureml.alerting.alert import ALERT_SCHEMA_VERSION, Alert
from secureml.alerting.exceptions import AlertDeliveryError, AlertingError, AlertStateError
from secureml.alerting.sinks import JsonlSink, Sink
from secureml.audit._fs import make_private_dir
from secureml.audit.config import AuditConfig
from secureml.audit.transports.kafka import ConfirmedProducer, ensure_topic

ALERT_SCHEMA_HEADER = "secureml-alert-schema"
_HEADERS: list[tuple[str, str | bytes | None]] = [(ALERT_SCHEMA_HEADER, str(ALERT_SCHEMA_VERSION).encode())]
_FLUSH_TIMEOUT = 60.0
_LEADER_WAIT = 30.0
_NO_LEADER_YET = frozenset({KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                            KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_PARTITION})


class AlertRecord(Sink):
    """A sink that also knows its positions and what was published after them."""

    @abstractmethod
    def positions(self) -> dict[str, int]:
        """Where the record ends now (saved with each checkpoint)."""

    @abstractmethod
    def published_since(self, positions: dict[str, int] | None) -> set[str]:
        """Ids of the alerts published after ``positions`` (from the start where a position is unknown).

        None (a first run, no state yet) reads nothing and only notes where the record ends.
        """


class KafkaAlertRecord(AlertRecord):
    """Avro alerts on a Kafka topic, keyed by operation_id; idempotent, acks=all, small linger."""

    def __init__(self, config: AuditConfig, topic: str) -> None:
        self.topic = topic
        ensure_topic(config, topic)
        self._common = {"bootstrap.servers": config.bootstrap_servers, **config.librdkafka_settings()}
        self._producer = ConfirmedProducer(config, topic, **{"linger.ms": 1})
        self._ends: dict[str, int] = {}

    def add(self, alert: Alert) -> None:
        self._producer.send(alert.to_avro(), alert.operation_id.encode(), headers=_HEADERS)

    def flush(self) -> None:
        confirmation = self._producer.confirm(_FLUSH_TIMEOUT)
        for msg in confirmation.delivered:
            source = f"{self.topic}/{msg.partition()}"
            self._ends[source] = max(self._ends.get(source, 0), msg.offset() + 1)
        if not confirmation.ok:
            failures = list(dict.fromkeys(confirmation.failures))  # a refusal is the same for every alert
            raise AlertDeliveryError(
                f"{confirmation.pending + len(confirmation.failures)} alert(s) were not confirmed by Kafka topic "
                f"{self.topic!r} ({'; '.join(failures[:3]) or 'timed out'}); fix that, then restart the alerter "
                "(the state was not advanced, nothing is lost)"
            )

    def positions(self) -> dict[str, int]:
        return dict(self._ends)

    def published_since(self, positions: dict[str, int] | None) -> set[str]:
        consumer = Consumer({**self._common, "group.id": f"secureml-alerter-readback-{uuid.uuid4().hex}",
                             "enable.auto.commit": False, "enable.partition.eof": True})
        try:
            partitions = consumer.list_topics(self.topic, timeout=15).topics[self.topic].partitions
            todo: list[TopicPartition] = []
            for partition in partitions:
                low, high = self._watermarks(consumer, partition)
                source = f"{self.topic}/{partition}"
                start = high if positions is None else max(positions.get(source, low), low)
                self._ends[source] = high
                if start < high:
                    todo.append(TopicPartition(self.topic, partition, start))
            return self._read(consumer, todo)
        except KafkaException as exc:
            raise AlertStateError(f"cannot read back alerts topic {self.topic!r}: {exc}; check the broker") from exc
        finally:
            consumer.close()

    def _watermarks(self, consumer: Consumer, partition: int) -> tuple[int, int]:
        """Low and high offsets of a partition, waiting out a topic created a moment ago (no leader yet)."""
        deadline = time.monotonic() + _LEADER_WAIT
        while True:
            try:
                low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, partition), timeout=10)
                return int(low), int(high)
            except KafkaException as exc:
                if exc.args[0].code() not in _NO_LEADER_YET or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _read(self, consumer: Consumer, todo: list[TopicPartition]) -> set[str]:
        ids: set[str] = set()
        if not todo:
            return ids
        ends = {tp.partition: self._ends[f"{self.topic}/{tp.partition}"] for tp in todo}
        consumer.assign(todo)
        while ends:
            for msg in consumer.consume(num_messages=10_000, timeout=0.1):
                error, partition, offset, value = msg.error(), msg.partition() or 0, msg.offset() or 0, msg.value()
                if error is not None and error.code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(error)
                if error is None and value is not None:
                    ids.add(Alert.from_avro(value).alert_id)
                if error is not None or offset + 1 >= ends.get(partition, 0):
                    ends.pop(partition, None)
        return ids

    def close(self) -> None:
        self._producer.close(_FLUSH_TIMEOUT)


class FileAlertRecord(AlertRecord):
    """JSON lines in ``alerts.jsonl`` (owner-only), the embedded mode's alerts topic; fsynced on flush."""

    NAME = "alerts.jsonl"

    def __init__(self, directory: Path) -> None:
        self.path = make_private_dir(directory) / self.NAME
        if self.path.is_symlink():  # it would be read, truncated and appended to wherever it points
            raise AlertingError(f"{self.path} is a symbolic link: secureml-audit never writes through links inside "
                                f"its log directory (it points to {os.readlink(self.path)}); remove it")
        self._file = JsonlSink(self.path)
        self._end = self._size()

    def _size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def add(self, alert: Alert) -> None:
        self._file.add(alert)

    def flush(self) -> None:
        self._file.flush()
        self._end = self._size()

    def positions(self) -> dict[str, int]:
        return {self.NAME: self._end}

    def published_since(self, positions: dict[str, int] | None) -> set[str]:
        if not self.path.exists():
            return set()
        data = self.path.read_bytes()
        complete = data.rfind(b"\n") + 1
        if complete < len(data):  # a torn last line from a crash: drop it, its alert will come again
            os.truncate(self.path, complete)
        self._end = complete
        start = complete if positions is None else positions.get(self.NAME, 0)
        ids = set()
        for line in data[start:complete].splitlines():
            if line.strip():
                ids.add(json.loads(line)["alert_id"])
        return ids
