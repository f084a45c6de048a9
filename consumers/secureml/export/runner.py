"""Exports from start to end: pick the sink, read the events, render them, deliver them batch by batch.

Batch mode reads one version of the lake (``LakeReader``). ``follow`` keeps going: in Kafka
mode as its own consumer group on the audit topic (consume, render, produce in one
transaction into a Kafka sink), in embedded mode by reading each new lake version (and the
embedded log's tail) every ``interval`` seconds.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secureml.audit.config import AuditConfig, resolve_config
from secureml.audit.exceptions import AuditValidationError
from secureml.export.events import EventBatch, LakeReader
from secureml.export.formats import FORMATS, render
from secureml.export.sinks import (
    SINK_KINDS,
    STDOUT,
    Cursor,
    FileSink,
    HttpSink,
    KafkaSink,
    Sink,
    StreamSink,
    state_path,
)
from secureml.progress import Progress
from secureml.query.filters import parse_time

log = logging.getLogger(__name__)

DEFAULT_BATCH = 10_000


@dataclass
class ExportStats:
    """What one export did."""

    events: int = 0
    records: int = 0
    batches: int = 0


def parse_sink(spec: str) -> tuple[str, str]:
    """``file:PATH``, ``http:URL`` (or the URL itself), ``kafka:TOPIC`` or ``-`` (stdout) -> (kind, target)."""
    if spec == STDOUT:
        return "stdout", STDOUT
    kind, sep, target = spec.partition(":")
    if not sep or kind not in SINK_KINDS or not target:
        raise AuditValidationError("sink", f"must be file:PATH, http:URL or kafka:TOPIC, got {spec!r:.100}",
                                   where="export")
    if kind in ("http", "https"):
        if target.startswith(("http://", "https://")):  # http:URL
            url = target
        elif target.startswith("//"):  # the URL itself
            url = spec
        else:  # http:host:port/path
            url = f"http://{target}"
        if not url.split("://", 1)[1].split("/", 1)[0]:
            raise AuditValidationError("sink", f"names no host: {spec!r:.100}", where="export")
        return "http", url
    if kind == "kafka" and not all(c.isalnum() or c in "._-" for c in target):
        raise AuditValidationError("sink", f"{target!r:.100} is not a Kafka topic name (letters, digits, '.', '_', "
                                   "'-')", where="export")
    return kind, target


def default_instance_id(config: AuditConfig, export_format: str, spec: str) -> str:
    """Stable across restarts of one exporter on one host: a restart fences its killed predecessor."""
    digest = hashlib.sha1(f"{config.log_dir}|{config.topic}|{export_format}|{spec}".encode()).hexdigest()[:12]
    return f"{socket.gethostname()}-{digest}"


def open_sink(spec: str, export_format: str, config: AuditConfig, *, instance_id: str, from_kafka: bool,
              http_deadline: float = 60.0, http_chunk: int = 500) -> Sink:
    """The sink a spec names; sinks that keep no state of their own get a cursor under ``log_dir/export/``."""
    kind, target = parse_sink(spec)
    if kind == "stdout":
        return StreamSink()
    if kind == "file":
        return FileSink(Path(target).expanduser().absolute(), export_format)
    cursor = None if from_kafka else Cursor(state_path(config.log_dir, spec, export_format), export_format)
    if kind == "http":
        return HttpSink(target, cursor, deadline=http_deadline, chunk=http_chunk)
    if not config.bootstrap_servers:
        raise AuditValidationError("sink", f"{spec} needs a Kafka broker: give --bootstrap-servers or set "
                                   "SECUREML_AUDIT_BOOTSTRAP_SERVERS", where="export")
    return KafkaSink(config, target, f"secureml-audit-export-{instance_id}", cursor)


def _time_filter(start: object, end: object) -> Callable[[dict[str, Any]], bool] | None:
    low = None if start is None else parse_time(start, "start_time", "export")
    high = None if end is None else parse_time(end, "end_time", "export")
    if low is not None and high is not None and low > high:
        raise AuditValidationError("start_time", f"must not be after end_time ({low.isoformat()} > "
                                   f"{high.isoformat()})", where="export")
    if low is None and high is None:
        return None

    def keep(event: dict[str, Any]) -> bool:
        moment = dt.datetime.fromisoformat(event["timestamp"])
        return (low is None or moment >= low) and (high is None or moment <= high)

    return keep


class Exporter:
    """One export: a format, a sink, time bounds, and where to read from."""

    def __init__(
        self,
        export_format: str,
        sink: str,
        *,
        log_dir: str | os.PathLike[str] | None = None,
        bootstrap_servers: str | None = None,
        topic: str | None = None,
        start_time: object = None,
        end_time: object = None,
        batch_events: int = DEFAULT_BATCH,
        group: str | None = None,
        instance_id: str | None = None,
        progress: Progress | None = None,
        http_deadline: float = 60.0,
        http_chunk: int = 500,
    ) -> None:
        if export_format not in FORMATS:
            raise AuditValidationError("format", f"must be one of {', '.join(FORMATS)}, got {export_format!r:.40}",
                                       where="export")
        if isinstance(batch_events, bool) or not isinstance(batch_events, int) or batch_events < 1:
            raise AuditValidationError("batch_events", f"must be a positive integer, got {batch_events!r:.40}",
                                       where="export")
        if isinstance(http_chunk, bool) or not isinstance(http_chunk, int) or http_chunk < 1:
            raise AuditValidationError("http_batch", f"must be a positive integer, got {http_chunk!r:.40}",
                                       where="export")
        if not http_deadline > 0:
            raise AuditValidationError("http_timeout", f"must be > 0 seconds, got {http_deadline!r:.40}",
                                       where="export")
        parse_sink(sink)
        self.keep = _time_filter(start_time, end_time)
        self.format = export_format
        self.sink_spec = sink
        self.log_dir = log_dir
        self.config = resolve_config(log_dir=log_dir, bootstrap_servers=bootstrap_servers, topic=topic)
        self.start_time, self.end_time = start_time, end_time
        self.batch_events = batch_events
        self.instance_id = instance_id or default_instance_id(self.config, export_format, sink)
        self.group = group or f"secureml-audit-export-{export_format}-{hashlib.sha1(sink.encode()).hexdigest()[:8]}"
        self.progress = progress or Progress("export", enabled=False)
        self.http_deadline, self.http_chunk = http_deadline, http_chunk
        self.stats = ExportStats()

    def _open(self, *, from_kafka: bool) -> Sink:
        return open_sink(self.sink_spec, self.format, self.config, instance_id=self.instance_id,
                         from_kafka=from_kafka, http_deadline=self.http_deadline, http_chunk=self.http_chunk)

    def _deliver(self, sink: Sink, batch: EventBatch, consumer: Any = None) -> None:
        events = batch.events if self.keep is None else [e for e in batch.events if self.keep(e)]
        records = render(self.format, events)
        sink.write(records, batch.done, consumer)
        self.stats.events += len(events)
        self.stats.records += len(records)
        self.stats.batches += 1

    def run_batch(self, stop: threading.Event | None = None, sink: Sink | None = None) -> ExportStats:
        """Export what one version of the lake holds past the sink's positions, then stop."""
        own = sink is None
        sink = sink or self._open(from_kafka=False)
        try:
            reader = LakeReader(None if self.log_dir is None else str(self.log_dir), self.start_time,
                                self.end_time, self.batch_events)
            try:
                done = sink.resume()
                total = reader.pending(done) if self.progress.enabled else None
                for batch in reader.batches(done):
                    self._deliver(sink, batch)
                    self.progress.advance(self.stats.events, total)
                    if stop is not None and stop.is_set():
                        break
            finally:
                reader.close()
        finally:
            if own:
                sink.close()
        return self.stats

    def follow(self, stop: threading.Event, interval: float = 1.0) -> ExportStats:
        """Export until ``stop``: from the Kafka topic in Kafka mode, else from each new lake version."""
        if self.config.bootstrap_servers:
            return self._follow_kafka(stop)
        sink = self._open(from_kafka=False)
        try:
            while not stop.is_set():
                before = self.stats.batches
                self.run_batch(stop, sink)
                if self.stats.batches == before:
                    stop.wait(interval)
        finally:
            sink.close()
        return self.stats

    def _follow_kafka(self, stop: threading.Event) -> ExportStats:
        from secureml.export.follow import KafkaFollower

        sink = self._open(from_kafka=True)
        follower = KafkaFollower(self.config, self.group, self.instance_id, sink)
        try:
            while not stop.is_set():
                batch = follower.poll(self.batch_events, 0.5)
                if batch is None:
                    continue
                self._deliver(sink, batch, follower.consumer if not sink.owns_positions else None)
                self.progress.advance(self.stats.events, None)
        finally:
            follower.close()
            sink.close()
        return self.stats

