"""Where exported records go: a file, an HTTP endpoint, a Kafka topic.

A sink takes a batch of records with the positions they come from (``write``) and says which
positions it already holds (``resume``), so an interrupted export goes on where it stopped:

- ``file:PATH``: JSON lines, owner-only. Each batch is appended and fsynced, then a cursor
  beside the file (``PATH.cursor``) records the file's length and the positions; on resume the
  file is cut back to that length, so a batch torn by a crash is written again, never twice.
- ``http:URL`` (or ``https:``): each batch POSTed as a JSON array (one record alone: the
  object itself, as Marquez takes it) with an ``Idempotency-Key`` header, retried with
  backoff within a deadline. At least once: a receiver deduplicates on the key or on the
  records' ids (event ids). The cursor lives under ``log_dir/export/``.
- ``kafka:TOPIC``: a transactional producer; each batch is one transaction. Following the
  Kafka topic, the consumed offsets are committed in the same transaction (exactly once for
  readers with ``isolation.level=read_committed``); from the lake, the cursor is saved after
  the commit (at least once across a crash between the two).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, BinaryIO

from confluent_kafka import KafkaException, Producer, TopicPartition

from secureml.audit._fs import make_private_dir, open_private, write_atomically
from secureml.audit.config import AuditConfig
from secureml.audit.exceptions import AuditValidationError
from secureml.audit.transports.kafka import PRODUCER_DEFAULTS, ensure_topic
from secureml.export.events import Positions
from secureml.export.exceptions import ExportSinkError
from secureml.export.formats import Record

log = logging.getLogger(__name__)

SINK_KINDS = ("file", "http", "https", "kafka")
STDOUT = "-"


class Sink(ABC):
    """Delivers batches of records and remembers the positions they came from."""

    # True when the sink stores the positions itself (a Kafka consumer then seeks to them
    # instead of using its group's committed offsets).
    owns_positions = True

    @abstractmethod
    def resume(self) -> Positions:
        """Positions (last exported per source) already delivered."""

    @abstractmethod
    def write(self, records: list[Record], done: Positions, consumer: Any = None) -> None:
        """Deliver a batch whole and remember ``done``; ``consumer``: the Kafka consumer the batch came from."""

    def close(self) -> None:
        """Release connections and files."""


class Cursor:
    """Positions and extra state of one export, in a small owner-only JSON file written atomically."""

    def __init__(self, path: Path, export_format: str) -> None:
        self.path = path
        self.format = export_format
        self.state: dict[str, Any] = {"format": export_format, "done": {}}
        if path.exists():
            try:
                self.state = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise ExportSinkError(f"the export cursor {path} cannot be read ({exc}): remove it to export "
                                      "again from the start") from None
            if self.state.get("format") != export_format:
                raise AuditValidationError("format", f"{path} records a {self.state.get('format')} export, not "
                                           f"{export_format}: give another sink (or remove the cursor)",
                                           where="export")

    @property
    def done(self) -> Positions:
        return {str(k): int(v) for k, v in self.state.get("done", {}).items()}

    def save(self, done: Positions, **extra: Any) -> None:
        self.state = {**self.state, **extra, "done": {**self.done, **done}}
        write_atomically(self.path, json.dumps(self.state, sort_keys=True).encode())


def _merge(a: Positions, b: Positions) -> Positions:
    return {**a, **{k: max(v, a.get(k, v)) for k, v in b.items()}}


class FileSink(Sink):
    """JSON lines appended to a file, a batch at a time, with a cursor beside it."""

    def __init__(self, path: Path, export_format: str) -> None:
        self.path = path
        if not path.parent.is_dir():
            raise AuditValidationError("sink", f"the folder of {path} does not exist: create it first",
                                       where="export")
        self._cursor = Cursor(path.with_name(path.name + ".cursor"), export_format)
        length = self._cursor.state.get("length")
        if length is None and path.exists() and path.stat().st_size:
            raise AuditValidationError("sink", f"{path} exists and was not written by an export (no "
                                       f"{self._cursor.path.name} beside it): give a new file", where="export")
        if length is None:  # claimed before any byte is written, so a crash in the first batch is resumable too
            self._cursor.save({}, length=0)
        self._fd = open_private(path, os.O_WRONLY | os.O_CREAT)
        size = os.fstat(self._fd).st_size
        length = int(length or 0)
        if size < length:
            os.close(self._fd)
            raise ExportSinkError(f"{path} is shorter ({size} bytes) than its cursor says ({length}): it was "
                                  "changed outside the export; remove both to export again from the start")
        if size > length:  # a batch torn by a crash: it is written again from the cursor's positions
            log.info("export: dropping %d bytes of an unfinished batch at the end of %s", size - length, path)
            os.ftruncate(self._fd, length)
            os.fsync(self._fd)
        self._length = length

    def resume(self) -> Positions:
        return self._cursor.done

    def write(self, records: list[Record], done: Positions, consumer: Any = None) -> None:
        data = b"".join(record.json() + b"\n" for record in records)
        if data:
            os.lseek(self._fd, self._length, os.SEEK_SET)
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
        self._length += len(data)
        self._cursor.save(_merge(self._cursor.done, done), length=self._length)

    def close(self) -> None:
        os.close(self._fd)


class StreamSink(Sink):
    """JSON lines on standard output: nothing to resume (each run starts from the beginning)."""

    def __init__(self, stream: BinaryIO | None = None) -> None:
        self._stream = stream

    def resume(self) -> Positions:
        return {}

    def write(self, records: list[Record], done: Positions, consumer: Any = None) -> None:
        stream = self._stream or sys.stdout.buffer
        stream.write(b"".join(record.json() + b"\n" for record in records))
        stream.flush()


def state_path(log_dir: Path, spec: str, export_format: str) -> Path:
    """Where the cursor of an export to a non-file sink lives: ``log_dir/export/<digest>.json``."""
    digest = hashlib.sha256(f"{export_format}|{spec}".encode()).hexdigest()[:16]
    return make_private_dir(log_dir / "export") / f"{export_format}-{digest}.json"


class HttpSink(Sink):
    """POSTs batches as JSON, at least once, with retries within a deadline."""

    def __init__(self, url: str, cursor: Cursor | None, *, deadline: float = 60.0, chunk: int = 500,
                 headers: dict[str, str] | None = None) -> None:
        self.url = url
        self.deadline = deadline
        self.chunk = chunk
        self.headers = headers or {}
        self._cursor = cursor
        self.owns_positions = cursor is not None

    def resume(self) -> Positions:
        return self._cursor.done if self._cursor is not None else {}

    def write(self, records: list[Record], done: Positions, consumer: Any = None) -> None:
        for start in range(0, len(records), self.chunk):
            self._post(records[start : start + self.chunk])
        if self._cursor is not None:
            self._cursor.save(done)
        if consumer is not None and done:
            consumer.commit(offsets=_offsets(done), asynchronous=False)

    def _post(self, records: list[Record]) -> None:
        ids = "\n".join(record.id for record in records)
        key = hashlib.sha256(ids.encode()).hexdigest()
        values = [record.value for record in records]
        body = json.dumps(values[0] if len(values) == 1 else values, separators=(",", ":"), default=str).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": key, **self.headers}
        give_up = time.monotonic() + self.deadline
        wait, attempt, last_error = 0.25, 0, ""
        while True:
            attempt += 1
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=min(30.0, self.deadline)) as response:
                    response.read()
                return
            except urllib.error.HTTPError as exc:
                last_error = f"HTTP {exc.code} {exc.reason}"
                if 400 <= exc.code < 500 and exc.code not in (408, 425, 429):
                    raise ExportSinkError(f"{self.url} refused the export batch ({last_error}): check the URL and "
                                          "what the receiver accepts; nothing after this batch was sent") from None
            except (urllib.error.URLError, OSError) as exc:
                last_error = str(getattr(exc, "reason", exc))
            if time.monotonic() + wait > give_up:
                raise ExportSinkError(
                    f"{self.url} did not take the export batch within {self.deadline:g}s ({attempt} attempts, last: "
                    f"{last_error}); run the export again once it is reachable: it resumes after the last batch "
                    "delivered")
            log.info("export: %s failed (%s), retrying in %.1fs", self.url, last_error, wait)
            time.sleep(wait)
            wait = min(wait * 2, 8.0)


def _offsets(done: Positions) -> list[TopicPartition]:
    """Kafka offsets to commit for positions read from ``topic/partition`` sources (the next offset to read)."""
    out = []
    for source, last in done.items():
        topic, _, partition = source.rpartition("/")
        out.append(TopicPartition(topic, int(partition), last + 1))
    return out


class KafkaSink(Sink):
    """One transaction per batch into a topic, keyed by operation id; with a consumer, its offsets too."""

    def __init__(self, config: AuditConfig, topic: str, transactional_id: str, cursor: Cursor | None,
                 *, timeout: float = 60.0) -> None:
        self.topic = topic
        self.timeout = timeout
        self._cursor = cursor
        self.owns_positions = cursor is not None
        ensure_topic(config, topic)
        settings = {key: value for key, value in PRODUCER_DEFAULTS.items() if key != "message.timeout.ms"}
        self._producer = Producer({
            **settings, "bootstrap.servers": config.bootstrap_servers, **config.librdkafka_settings(),
            "transactional.id": transactional_id, "transaction.timeout.ms": int(timeout * 1000),
        })
        try:
            # Fences an older instance with the same id and aborts what it left open.
            self._producer.init_transactions(timeout)
        except KafkaException as exc:
            raise ExportSinkError(f"Kafka at {config.bootstrap_servers} did not start transactions for "
                                  f"{transactional_id!r}: {exc.args[0].str()}") from None

    def resume(self) -> Positions:
        return self._cursor.done if self._cursor is not None else {}

    def write(self, records: list[Record], done: Positions, consumer: Any = None) -> None:
        producer = self._producer
        try:
            producer.begin_transaction()
            for record in records:
                while True:
                    try:
                        producer.produce(self.topic, record.json(), record.key.encode())
                        break
                    except BufferError:
                        producer.poll(0.1)
                producer.poll(0)
            if consumer is not None and done:
                producer.send_offsets_to_transaction(_offsets(done), consumer.consumer_group_metadata(),
                                                     self.timeout)
            producer.commit_transaction(self.timeout)
        except KafkaException as exc:
            error = exc.args[0]
            if error.txn_requires_abort():
                with contextlib.suppress(KafkaException):
                    producer.abort_transaction(self.timeout)
            raise ExportSinkError(f"the Kafka transaction into {self.topic!r} failed ({error.str()}); nothing of "
                                  "this batch is visible to read_committed readers: run the export again to "
                                  "resume") from None
        if self._cursor is not None:
            self._cursor.save(done)

    def close(self) -> None:
        self._producer.flush(self.timeout)
