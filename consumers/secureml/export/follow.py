"""Following the audit topic as the exporter's own consumer group (``export --follow`` in Kafka mode).

The consumer reads with ``isolation.level=read_committed`` and never commits on its own: a
Kafka sink commits the offsets in its transaction, an HTTP sink after a delivered batch, and
a file sink keeps them in its cursor (the consumer then seeks there on every assignment).
Static membership (``group.instance.id``) lets a restarted exporter take its partitions back
at once instead of waiting for the group to notice that its predecessor died.
"""

from __future__ import annotations

import logging
from typing import cast

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from secureml.audit.config import AuditConfig
from secureml.audit.exceptions import AuditTransportError
from secureml.audit.transports.kafka import AUTHORIZATION_ERRORS, ensure_topic, refused
from secureml.export.events import EventBatch, stream_events
from secureml.export.sinks import Sink
from secureml.stream.kafka import CONSUMER_DEFAULTS
from secureml.stream.sources import Batch, header_version

log = logging.getLogger(__name__)


class KafkaFollower:
    """Consumes the audit topic in ``group`` and hands out decoded batches."""

    def __init__(self, config: AuditConfig, group: str, instance_id: str, sink: Sink) -> None:
        self.config = config
        self.topic = config.topic
        self.group = group
        self._sink = sink
        ensure_topic(config)
        self.consumer = Consumer({
            **CONSUMER_DEFAULTS, "enable.partition.eof": False,
            "bootstrap.servers": config.bootstrap_servers, **config.librdkafka_settings(),
            "group.id": group, "group.instance.id": instance_id, "isolation.level": "read_committed",
        })
        self.consumer.subscribe([self.topic], on_assign=self._on_assign)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._sink.owns_positions:  # the sink's cursor, not the group's offsets, says where to go on
            done = self._sink.resume()
            for tp in partitions:
                last = done.get(f"{self.topic}/{tp.partition}")
                tp.offset = OFFSET_BEGINNING if last is None else last + 1
        consumer.assign(partitions)

    def poll(self, max_items: int, timeout: float) -> EventBatch | None:
        """The next batch of events (None when nothing came within ``timeout``)."""
        batches: dict[int, Batch] = {}
        for msg in self.consumer.consume(num_messages=max_items, timeout=timeout):
            error = msg.error()
            if error is not None:
                if error.code() in AUTHORIZATION_ERRORS:
                    raise AuditTransportError(refused(
                        self.config, error, f"reading topic {self.topic!r} in consumer group {self.group!r}",
                        f"READ on topic {self.topic!r} and READ on group {self.group!r}"))
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("Kafka: %s", error.str())
                continue
            partition, offset = cast(int, msg.partition()), cast(int, msg.offset())
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = Batch(f"{self.topic}/{partition}", offset)
            batch.positions.append(offset)
            batch.versions.append(header_version(cast("list[tuple[str, bytes]] | None", msg.headers())))
            batch.values.append(msg.value() or b"")
            batch.keys.append(msg.key())
            batch.next_position = offset + 1
        if not batches:
            return None
        return stream_events(list(batches.values()))

    def close(self) -> None:
        """Leave the group (static members keep their partitions for the session timeout)."""
        try:
            self.consumer.close()
        except Exception as exc:  # noqa: BLE001 - closing is best effort: the work is committed or not
            log.warning("export: closing the consumer: %s", exc)

