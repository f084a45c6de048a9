"""export --follow in Kafka mode: its own consumer group; exactly once into a Kafka sink across a SIGKILL."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer

from conftest import Harness
from secureml.audit import AuditTrail

pytestmark = pytest.mark.kafka


def exporter(harness: Harness, sink: str, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    """An `export --follow` process on the harness's topic, output appended to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "secureml.audit.cli", "export", "--follow", "--format", "jsonl", "--sink", sink,
             "--log-dir", str(harness.log_dir), "--bootstrap-servers", harness.bootstrap, "--topic", harness.topic,
             "--batch-events", "50", "--instance-id", f"exporter-{harness.topic}", *extra],
            stdout=out, stderr=out,
        )


class CommittedReader:
    """Reads a topic with isolation.level=read_committed in the background, keeping every record."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.records: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex[:8]}",
                                   "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                                   "enable.auto.commit": False, "topic.metadata.refresh.interval.ms": 500})
        self._consumer.subscribe([topic])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for msg in self._consumer.consume(500, 0.2):
                if msg.error() is None:
                    self.records.append(json.loads(msg.value()))

    def wait_for(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while len(self.records) < count:
            assert time.monotonic() < deadline, f"{len(self.records)} of {count} records after {timeout}s"
            time.sleep(0.1)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


def test_follow_into_kafka_is_exactly_once_across_sigkill(kafka: Harness, tmp_path: Path) -> None:
    """SIGKILL mid-way, restart: the sink topic (read_committed) holds every event exactly once."""
    out_topic = f"export-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "exporter.log"
    logged: list[str] = []
    stop_logging = threading.Event()

    def keep_logging() -> None:
        with AuditTrail("scoring", **kafka.options()) as trail:
            while not stop_logging.is_set():
                for i in range(50):
                    trail.log_model_inference("m", f"application_{i}", "low_risk", 0.7)
                trail.flush(30)
                time.sleep(0.02)
        logged.append(trail.operation_id)

    writer = threading.Thread(target=keep_logging)
    writer.start()
    reader = CommittedReader(kafka.bootstrap, out_topic)
    first = exporter(kafka, f"kafka:{out_topic}", log)
    try:
        reader.wait_for(500)  # mid-way: events are still being logged
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        killed_at = len(reader.records)
        stop_logging.set()
        writer.join(60)
        second = exporter(kafka, f"kafka:{out_topic}", log)
        try:
            total = _topic_size(kafka)
            assert total > killed_at, "the exporter was killed after it had exported everything"
            reader.wait_for(total)
            time.sleep(3)  # anything more (a duplicate) would show now
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(120)
    finally:
        stop_logging.set()
        writer.join(60)
        reader.close()
    ids = [record["event_id"] for record in reader.records]
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} duplicates"
    assert len(ids) == total
    assert second.returncode == 0, log.read_text()[-3000:]


def test_follow_into_a_file_resumes_after_sigkill(kafka: Harness, tmp_path: Path) -> None:
    """A file sink keeps its own Kafka positions: after a SIGKILL the restarted exporter neither skips nor repeats."""
    with AuditTrail("batch", **kafka.options()) as trail:
        for i in range(2000):
            trail.log_model_inference("m", f"application_{i}", "low_risk", 0.7)
    path = tmp_path / "events.jsonl"
    log = tmp_path / "exporter.log"
    first = exporter(kafka, f"file:{path}", log)
    deadline = time.monotonic() + 240
    while not (path.exists() and path.stat().st_size > 20_000):
        assert time.monotonic() < deadline and first.poll() is None, log.read_text()[-3000:]
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    second = exporter(kafka, f"file:{path}", log)
    try:
        deadline = time.monotonic() + 240
        while len(path.read_bytes().splitlines()) < 2002:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        time.sleep(2)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(120)
    ids = [json.loads(line)["event_id"] for line in path.read_bytes().splitlines()]
    assert len(ids) == len(set(ids)) == 2002


def _topic_size(harness: Harness) -> int:
    """Messages in the audit topic (sum of the partitions' high watermarks)."""
    from confluent_kafka import TopicPartition

    consumer = Consumer({"bootstrap.servers": harness.bootstrap, "group.id": f"size-{uuid.uuid4().hex[:8]}"})
    try:
        partitions = consumer.list_topics(harness.topic, timeout=10).topics[harness.topic].partitions
        return sum(consumer.get_watermark_offsets(TopicPartition(harness.topic, p), timeout=10)[1]
                   for p in partitions)
    finally:
        consumer.close()


def test_follow_into_http_commits_offsets_after_delivery(kafka: Harness, tmp_path: Path) -> None:
    """Kafka --follow into HTTP: every event is POSTed; a restarted exporter resumes from the committed offsets."""
    from support.export import http_receiver, log_trail

    log_trail(kafka.options())
    log = tmp_path / "exporter.log"
    with http_receiver(failures=2) as (url, received):
        first = exporter(kafka, f"http:{url}", log)
        try:
            deadline = time.monotonic() + 240
            while len(received.records()) < 12:
                assert time.monotonic() < deadline and first.poll() is None, log.read_text()[-3000:]
                time.sleep(0.1)
        finally:
            first.send_signal(signal.SIGTERM)
            first.wait(120)
        log_trail(kafka.options(), inferences=1)
        second = exporter(kafka, f"http:{url}", log)
        try:
            deadline = time.monotonic() + 240
            while len(received.records()) < 22:
                assert time.monotonic() < deadline and second.poll() is None, log.read_text()[-3000:]
                time.sleep(0.1)
            time.sleep(2)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(120)
    ids = [record["event_id"] for record in received.records()]
    assert len(ids) == len(set(ids)) == 22  # a clean stop loses and repeats nothing
    assert first.returncode == second.returncode == 0
