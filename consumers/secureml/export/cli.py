"""``secureml-audit export``: audit events as OCSF, OpenLineage or JSON lines, into a file, HTTP or Kafka."""

from __future__ import annotations

import argparse
import os
import signal
import threading

from secureml.audit.config import DEFAULT_TOPIC, existing_log_dir, resolve_config
from secureml.export.formats import FORMATS
from secureml.export.runner import DEFAULT_BATCH, Exporter
from secureml.lake.table import URI_ENV
from secureml.progress import Progress

HELP = "export audit events as OCSF, OpenLineage or JSON lines (file, HTTP or Kafka)"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``secureml-audit export``."""
    parser.description = (
        "Export audit events for SIEMs (OCSF), lineage tools (OpenLineage) or anything else (JSON lines). Without "
        "--follow: the events of one version of the lake, then stop. With --follow: keep exporting new events (Kafka "
        "mode: as its own consumer group, exactly once into a Kafka sink). An export to a file or an HTTP endpoint "
        "resumes where the previous one stopped. See docs/exports.md for the mappings.")
    parser.add_argument("--format", default="jsonl", metavar="|".join(FORMATS),
                        help=f"output format: {', '.join(FORMATS)} (default jsonl)")
    parser.add_argument("--sink", default="-", metavar="file:PATH|http:URL|kafka:TOPIC",
                        help="where records go (default: standard output, JSON lines, not resumable)")
    parser.add_argument("--start", "--since", "--start-time", dest="start_time", metavar="TIME",
                        help="first event time, ISO 8601, UTC when naive (--since still works)")
    parser.add_argument("--end", "--until", "--end-time", dest="end_time", metavar="TIME",
                        help="last event time, inclusive (--until still works)")
    parser.add_argument("--log-dir", metavar="DIR", help="the folder the audit trail logs to (default "
                        "$SECUREML_AUDIT_LOG_DIR or secureml_audit_logs); non-file sinks keep their cursor in "
                        "DIR/export/")
    parser.add_argument("--lake-uri", metavar="URI", help="where the Delta table lives, e.g. s3://bucket/audit/events "
                        "(default: $SECUREML_AUDIT_LAKE_URI or LOG_DIR/lake/events)")
    parser.add_argument("--follow", action="store_true", help="keep exporting new events until SIGINT/SIGTERM")
    parser.add_argument("--bootstrap-servers", metavar="SERVERS", help="Kafka bootstrap servers, for --follow and "
                        "kafka: sinks (default: $SECUREML_AUDIT_BOOTSTRAP_SERVERS; none = embedded log)")
    parser.add_argument("--topic", metavar="TOPIC", help=f"the audit topic --follow reads (default: "
                        f"$SECUREML_AUDIT_TOPIC or {DEFAULT_TOPIC})")
    parser.add_argument("--group", metavar="GROUP", help="consumer group of --follow in Kafka mode (default: one per "
                        "format and sink)")
    parser.add_argument("--instance-id", metavar="ID", help="this exporter's static member id and transactional id "
                        "(default: host, lake, format and sink); give each of several exporters its own")
    parser.add_argument("--batch-events", type=int, default=DEFAULT_BATCH, metavar="N",
                        help=f"events per batch (one file append, HTTP post or transaction; default {DEFAULT_BATCH:,})")
    parser.add_argument("--http-timeout", type=float, default=60.0, metavar="SECONDS",
                        help="give up on an HTTP batch after retrying this long (default 60)")
    parser.add_argument("--http-batch", type=int, default=500, metavar="N",
                        help="records per HTTP request (1: one JSON object per POST, as Marquez takes it; default 500)")
    parser.add_argument("--progress", action="store_true", help="show progress on stderr even when it is not a "
                        "terminal")


def run(args: argparse.Namespace) -> int:
    """Export once, or follow until stopped."""
    if args.lake_uri:
        os.environ[URI_ENV] = args.lake_uri
    sink = args.sink
    config = resolve_config(log_dir=args.log_dir, bootstrap_servers=args.bootstrap_servers)
    if not (args.follow and config.bootstrap_servers) and not args.lake_uri:
        existing_log_dir(args.log_dir, "export")  # read from there: it must exist
    progress = Progress("export", True if args.progress else None)
    exporter = Exporter(
        args.format, sink, log_dir=args.log_dir, bootstrap_servers=args.bootstrap_servers, topic=args.topic,
        start_time=args.start_time, end_time=args.end_time, batch_events=args.batch_events, group=args.group,
        instance_id=args.instance_id, progress=progress, http_deadline=args.http_timeout, http_chunk=args.http_batch,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stats = exporter.follow(stop) if args.follow else exporter.run_batch(stop)
    progress.step(f"done: {stats.events:,} events as {stats.records:,} {args.format} records in {stats.batches:,} "
                  "batches")
    return 0

