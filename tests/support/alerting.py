"""Helpers of the alerting tests (no tests here): a movable clock, alerters, and reading back what they published."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from conftest import Harness
from secureml.alerting import Alert, Alerter, Sink, load_rules
from secureml.audit.timeutil import now_micros
from secureml.audit.transports.embedded import LogRecord, log_path, read_segment
from secureml.stream.decode import decode_one

DAY = 86_400


class MovableClock:
    """The real clock plus an offset that a test moves forward."""

    def __init__(self, offset_seconds: float = 0) -> None:
        self.offset = round(offset_seconds * 1_000_000)

    def __call__(self) -> int:
        return now_micros() + self.offset

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.offset += round(seconds * 1_000_000)


def pseudonym_of(harness: Harness, identifier: str) -> str:
    """An id as events, and so alerts, hold it under the default privacy policy: its keyed pseudonym."""
    from secureml.audit.config import resolve_config
    from secureml.audit.privacy import keystore_for
    from secureml.audit.privacy.keys import pseudonym

    return pseudonym(keystore_for(resolve_config(**harness.options())).pseudonym_key(), identifier)


def alerts_topic(harness: Harness) -> str:
    """The alerts topic of a test (one per events topic)."""
    return f"{harness.topic}-alerts"


def make_alerter(harness: Harness, rules_yaml: str | None = None, *, clock: Any = None, topic: str | None = None,
                 log_dir: Path | None = None, sinks: tuple[Sink, ...] = (), **settings: Any) -> Alerter:
    """An alerter on the harness's transport (a consumer group of its own per alerts topic)."""
    options = harness.options()
    topic = topic or alerts_topic(harness)
    return Alerter(
        None if rules_yaml is None else load_rules(text=rules_yaml),
        log_dir=log_dir or options["log_dir"], bootstrap_servers=options["bootstrap_servers"],
        topic=options["topic"], alerts_topic=topic, group=f"alerter-{topic}",
        clock=clock or MovableClock(), sinks=sinks, **settings,
    )


def published(harness: Harness, topic: str | None = None, log_dir: Path | None = None) -> list[Alert]:
    """Every alert on the alerts topic (Kafka) or in alerts.jsonl (embedded), in order."""
    if harness.kind == "embedded":
        path = (log_dir or harness.log_dir) / "alerts" / "alerts.jsonl"
        return [_from_json(json.loads(line)) for line in path.read_text().splitlines()] if path.exists() else []
    topic = topic or alerts_topic(harness)
    consumer = Consumer({"bootstrap.servers": harness.bootstrap, "group.id": "read-alerts",
                         "enable.partition.eof": True, "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
        waiting = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, 0) for p in waiting])
        alerts = []
        while waiting:
            for msg in consumer.consume(1000, timeout=0.1):
                error, value = msg.error(), msg.value()
                if error is not None:
                    assert error.code() == KafkaError._PARTITION_EOF, error
                    waiting.discard(msg.partition() or 0)
                    continue
                assert value is not None
                alerts.append(Alert.from_avro(value))
        return alerts
    finally:
        consumer.close()


def _from_json(data: dict[str, Any]) -> Alert:
    from secureml.alerting import Trigger

    return Alert(**{**data, "created_at": 0, "event_time": 0,
                    "triggers": tuple(Trigger.from_dict(t) for t in data["triggers"])})


def stored_event(harness: Harness, source: str, position: int) -> dict[str, Any]:
    """The event stored at a trigger's source and position, read from the log itself."""
    if harness.kind == "embedded":
        segment = log_path(harness.log_dir) / source.removeprefix("log/")
        record = next(read_segment(segment, position, max_records=1))
        assert isinstance(record, LogRecord)
        return decode_one(record.value)
    topic, partition = source.rsplit("/", 1)
    consumer = Consumer({"bootstrap.servers": harness.bootstrap, "group.id": "read-event", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, int(partition), position)])
        msg = consumer.poll(10)
        assert msg is not None and msg.error() is None and msg.offset() == position
        return decode_one(msg.value())
    finally:
        consumer.close()
