"""Kafka source: a consumer group member that seeks to the lake's positions on every assignment."""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from secureml.audit.config import AuditConfig
from secureml.audit.exceptions import AuditTransportError
from secureml.audit.privacy.detectors import redact, redact_bytes
from secureml.audit.schema import known_versions
from secureml.audit.transports.kafka import AUTHORIZATION_ERRORS, PRODUCER_DEFAULTS, ensure_topic, refused
from secureml.stream.sources import Batch, Item, Source, header_version

log = logging.getLogger(__name__)

ASSIGNMENT_TIMEOUT = 60.0
CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable.auto.commit": False,
    "auto.offset.reset": "earliest",
    "enable.partition.eof": True,
    "fetch.wait.max.ms": 50,
    "max.partition.fetch.bytes": 8 * 1024 * 1024,
    # Prefetch bounded by bytes alone: by default librdkafka stops fetching a partition once 100,000 of its
    # messages wait, and then waits fetch.queue.backoff.ms (1 s) before it looks again, while we read them in
    # a fraction of that (a 300k-event catch-up stalled 0.7 s in each run).
    "queued.min.messages": 10_000_000,
    "queued.max.messages.kbytes": 131072,
    "session.timeout.ms": 10_000,
}


# zigzag varint of a small schema version -> the version (1 -> 0x02, 2 -> 0x04, ...)
_FIRST_BYTE_VERSION = {v << 1: v for v in known_versions()}


def default_instance_id(config: AuditConfig) -> str:
    """A consumer-group instance id that is stable across restarts of one materializer."""
    digest = hashlib.sha1(f"{config.log_dir}|{config.topic}".encode()).hexdigest()[:12]
    return f"{socket.gethostname()}-{digest}"


def dlq_topic(topic: str) -> str:
    """The dead-letter topic of a topic."""
    return f"{topic}-dlq"


class KafkaSource(Source):
    """Reads ``config.topic`` in consumer group ``group``; bad messages go to ``<topic>-dlq``."""

    concurrent_commits = True  # librdkafka's consumer and producer are thread-safe
    slow_start = True  # the first assignment waits for the group to form (the broker delays a new group's first)

    def __init__(
        self,
        config: AuditConfig,
        group: str,
        *,
        instance_id: str | None = None,
        static: bool = True,
        client_settings: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.topic = config.topic
        self.group = group
        ensure_topic(config)
        ensure_topic(config, dlq_topic(self.topic), partitions=1)
        common = {"bootstrap.servers": config.bootstrap_servers, **config.librdkafka_settings()}
        # Static membership (``static``): a restarted service (same host, same lake) takes its partitions
        # back at once instead of waiting for the group to notice that its old self died. A run that
        # ends by itself is a dynamic member: a static one does not leave the group when it closes, so
        # its partitions, and any member still waiting to join, would wait a whole session timeout.
        member = {"group.instance.id": instance_id or default_instance_id(config)} if static else {}
        self._consumer = Consumer({**CONSUMER_DEFAULTS, **common, "group.id": group, **member,
                                   **(client_settings or {})})
        self._dlq = Producer({**PRODUCER_DEFAULTS, **common})
        self._dlq_failures: list[str] = []
        self._positions: Callable[[list[str]], dict[str, int]] = lambda _sources: {}
        self._next: dict[int, int] = {}
        self._ends: dict[int, int] = {}
        self._assigned = threading.Event()  # partitions are assigned (none, maybe): set between rebalances
        self._ever_assigned = False  # assigned at least once
        self._started = time.monotonic()

    def _source(self, partition: int) -> str:
        return f"{self.topic}/{partition}"

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Asked anew on every assignment: another instance may have committed these partitions since.
        held = self._positions([self._source(tp.partition) for tp in partitions])
        for tp in partitions:
            position = held.get(self._source(tp.partition))
            tp.offset = OFFSET_BEGINNING if position is None else position
            low, high = consumer.get_watermark_offsets(tp, timeout=10, cached=False)
            self._ends[tp.partition] = high
            self._next[tp.partition] = low if position is None else position
        consumer.assign(partitions)
        self._ever_assigned = True
        self._assigned.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Until the next assignment this member holds nothing, which is not being caught up: a run
        # --once that stopped in this gap left the partitions it was about to get back unread.
        self._assigned.clear()
        for tp in partitions:
            self._ends.pop(tp.partition, None)
            self._next.pop(tp.partition, None)
        consumer.unassign()

    def start(self, positions: Callable[[list[str]], dict[str, int]]) -> None:
        self._positions = positions
        self._started = time.monotonic()
        self._consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)

    def poll(self, max_items: int, timeout: float) -> list[Batch]:
        messages = self._consumer.consume(num_messages=max_items, timeout=timeout)
        if not messages:
            return []
        message = type(messages[0])
        if any(map(message.error, messages)):
            messages = self._without_errors(messages)
            if not messages:
                return []
        # Column by column, each a C loop over the messages (map of the Message type's methods): this runs
        # for every message the materializer reads. A message without error always has a partition, an
        # offset and a value.
        partitions = list(map(message.partition, messages))
        offsets = list(map(message.offset, messages))
        values = list(map(message.value, messages))
        keys = list(map(message.key, messages))
        # The schema version is also the record's first field: read it from there, and only look at
        # the (costly) headers of a message whose first byte is not a known version.
        first_byte = _FIRST_BYTE_VERSION.get
        versions: list[int | None] = [first_byte(value[0]) if value else None for value in values]
        for i in [i for i, version in enumerate(versions) if version is None]:
            values[i] = values[i] or b""  # (a message without a value: a tombstone)
            versions[i] = header_version(cast("list[tuple[str, bytes]] | None", messages[i].headers()))
        batches: list[Batch] = []
        groups: dict[int, list[int] | None] = {}  # partition -> its messages' indexes (None: all of them)
        if partitions.count(partitions[0]) == len(partitions):
            groups[cast(int, partitions[0])] = None
        else:
            for i, partition in enumerate(partitions):
                groups.setdefault(cast(int, partition), []).append(i)  # type: ignore[union-attr]
        for partition, indexes in groups.items():
            if indexes is None:
                batch = Batch(self._source(partition), cast(int, offsets[-1]) + 1, cast("list[int]", offsets),
                              versions, values, keys)
            else:
                batch = Batch(self._source(partition), cast(int, offsets[indexes[-1]]) + 1,
                              [cast(int, offsets[i]) for i in indexes], [versions[i] for i in indexes],
                              [values[i] for i in indexes], [keys[i] for i in indexes])
            self._next[partition] = batch.next_position
            batches.append(batch)
        return batches

    def _without_errors(self, messages: list[Any]) -> list[Any]:
        """The messages that carry data; a missing ACL stops the run, other errors are logged."""
        kept = []
        for msg in messages:
            error = msg.error()
            if error is None:
                kept.append(msg)
            elif error.code() in AUTHORIZATION_ERRORS:  # an ACL is missing: waiting cannot help
                raise AuditTransportError(refused(
                    self.config, error, f"reading topic {self.topic!r} in consumer group {self.group!r}",
                    f"READ on topic {self.topic!r} and READ on group {self.group!r}"))
            elif error.code() != KafkaError._PARTITION_EOF:
                log.warning("Kafka: %s", error.str())
        return kept

    def caught_up(self) -> bool:
        if not self._assigned.is_set():
            # Only the first assignment is timed: a later rebalance lasts as long as its slowest member.
            if not self._ever_assigned and time.monotonic() - self._started > ASSIGNMENT_TIMEOUT:
                raise AuditTransportError(
                    f"no partition of {self.topic!r} was assigned within {ASSIGNMENT_TIMEOUT:.0f}s: is the broker "
                    f"at {self.config.bootstrap_servers} healthy, or do other members of the group hold them all?"
                )
            return False
        return all(self._next.get(p, 0) >= end for p, end in self._ends.items())

    def lag(self) -> int:
        return sum(max(0, end - self._next.get(p, 0)) for p, end in self._ends.items())

    def dead_letter(self, item: Item, reason: str) -> None:
        partition = item.source.rsplit("/", 1)[1]

        def on_delivery(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                self._dlq_failed(err)

        try:
            self._dlq.produce(
                dlq_topic(self.topic), None if item.value is None else redact_bytes(item.value), item.key,
                headers=[("reason", redact(reason).encode()), ("source-topic", self.topic.encode()),
                         ("source-partition", partition.encode()), ("source-offset", str(item.position).encode())],
                on_delivery=on_delivery,
            )
            self._dlq.poll(0)
        except KafkaException as exc:  # refused at once (no ACL), or librdkafka's one-time fatal error
            self._dlq_failed(exc.args[0])

    def _dlq_failed(self, err: KafkaError) -> None:
        topic = dlq_topic(self.topic)
        self._dlq_failures.append(
            refused(self.config, err, f"writing to topic {topic!r}", f"WRITE on topic {topic!r}")
            if err.code() in AUTHORIZATION_ERRORS else err.str())

    def flush_dead_letters(self) -> None:
        try:
            remaining = self._dlq.flush(60)
        except KafkaException as exc:
            self._dlq_failed(exc.args[0])
            remaining = self._dlq.flush(60)
        if remaining or self._dlq_failures:
            failures, self._dlq_failures = self._dlq_failures, []
            raise AuditTransportError(
                f"could not store {remaining + len(failures)} dead letter(s) in {dlq_topic(self.topic)}: "
                f"{failures[:3]}; the lake is not advanced past them, restart to retry"
            )

    def committed(self, positions: dict[str, int]) -> None:
        offsets = [
            TopicPartition(self.topic, int(source.rsplit("/", 1)[1]), position)
            for source, position in positions.items()
            if source.startswith(self.topic + "/") and int(source.rsplit("/", 1)[1]) in self._next
        ]
        if offsets:
            self._consumer.commit(offsets=offsets, asynchronous=True)

    def close(self) -> None:
        self._dlq.flush(30)
        self._consumer.close()
