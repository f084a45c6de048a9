"""Witnessing through Kafka: checkpoints from ``<topic>-checkpoints``, cosignatures to ``<topic>-cosignatures``.

For a witness that cannot be reached over HTTP but can read the log's Kafka cluster. Every
record the materializer publishes to ``<topic>-checkpoints`` carries the checkpoint's C2SP note
and a consistency proof from the previous checkpoint (``"consistency": {"old_size", "proof"}``).
The witness reads the topic from its start and handles each record exactly as an HTTP
``add-checkpoint`` (so a record it already passed is a harmless 409), and publishes each
cosignature as a signed note (the checkpoint text and the cosignature line) to
``<topic>-cosignatures``. The materializer, configured with ``--witness kafka VKEY``, reads
that topic at every checkpoint and appends the valid cosignatures to the matching notes.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from secureml.audit.config import AuditConfig
from secureml.integrity.checkpoints import read_note, stored_checkpoints, write_note
from secureml.integrity.cosigning import WitnessEndpoint, request_body
from secureml.integrity.exceptions import NoteError, WitnessError
from secureml.integrity.notes import parse_note, signature_holds
from secureml.integrity.witness import Witness

log = logging.getLogger(__name__)

KAFKA = "kafka"  # the URL of a witness that takes checkpoints from the topic


def checkpoints_topic(topic: str) -> str:
    """The topic checkpoints are published to."""
    return f"{topic}-checkpoints"


def cosignatures_topic(topic: str) -> str:
    """The topic witnesses publish their cosignatures to."""
    return f"{topic}-cosignatures"


def _consumer(config: AuditConfig, topic: str) -> Any:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": config.bootstrap_servers, "group.id": f"secureml-audit-{uuid.uuid4()}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         **config.librdkafka_settings()})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    return consumer


def witness_topic(witness: Witness, config: AuditConfig, stop: threading.Event) -> None:
    """Cosign the checkpoints of ``<topic>-checkpoints`` until ``stop`` is set."""
    from confluent_kafka import Producer

    from secureml.audit.transports.kafka import PRODUCER_DEFAULTS, ensure_topic

    source, target = checkpoints_topic(config.topic), cosignatures_topic(config.topic)
    ensure_topic(config, source, partitions=1)
    ensure_topic(config, target, partitions=1)
    producer = Producer({**PRODUCER_DEFAULTS, "bootstrap.servers": config.bootstrap_servers,
                         **config.librdkafka_settings()})
    consumer = _consumer(config, source)
    try:
        while not stop.is_set():
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            try:
                record = json.loads(message.value())
                consistency = record["consistency"]
                note = parse_note(record["note"], f"{source} offset {message.offset()}")
                body = request_body(int(consistency["old_size"]),
                                    [base64.b64decode(n, validate=True) for n in consistency["proof"]], note)
            except (KeyError, TypeError, ValueError, NoteError) as exc:
                log.info("skipped %s offset %d: not a checkpoint with a note and proof (%s)", source,
                         message.offset(), exc)
                continue
            answer = witness.add_checkpoint(body)
            if answer.status != 200:
                log.info("did not cosign %s offset %d (%d): %s", source, message.offset(), answer.status,
                         answer.body.strip())
                continue
            producer.produce(target, (note.text + "\n" + answer.body).encode(), note.text.split("\n", 1)[0].encode())
            if producer.flush(30):
                raise WitnessError(f"a cosignature could not be published to {target}: check the broker")
    finally:
        consumer.close()


def collect_cosignatures(config: AuditConfig, lake_root: Path, witnesses: Sequence[WitnessEndpoint]) -> int:
    """Append to the lake's notes the valid cosignatures of ``witnesses`` found on ``<topic>-cosignatures``."""
    from confluent_kafka import TopicPartition

    topic = cosignatures_topic(config.topic)
    by_text = {c.log.head().text(): c.sequence for s in stored_checkpoints(lake_root)
               if (c := s.checkpoint) is not None and c.log is not None}
    consumer = _consumer(config, topic)
    added = 0
    try:
        try:
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        except Exception as exc:  # noqa: BLE001 - confluent_kafka raises KafkaException for a missing topic
            log.info("no cosignatures to collect from %s: %s", topic, exc)
            return 0
        position = 0
        while position < high:
            message = consumer.poll(5)
            if message is None:
                break
            if message.error() is not None:
                continue
            position = message.offset() + 1
            try:
                cosigned = parse_note(message.value(), f"{topic} offset {message.offset()}")
            except NoteError:
                continue
            sequence = by_text.get(cosigned.text)
            if sequence is None:
                continue
            lines = [line for w in witnesses for line in cosigned.by(w.key)
                     if signature_holds(cosigned.text, line, w.key)]
            note = read_note(lake_root, sequence)
            if note is not None and any(line not in note.signatures for line in lines):
                write_note(lake_root, sequence, note.with_signatures(lines))
                added += 1
    finally:
        consumer.close()
    return added
