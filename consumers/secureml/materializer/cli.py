"""``secureml-audit materialize``: turn the event stream into the Delta lake (a service, or ``--once``)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from secureml.audit.config import DEFAULT_TOPIC, existing_log_dir, resolve_config
from secureml.audit.exceptions import AuditError
from secureml.materializer.runner import DEFAULT_GROUP, materialize

HELP = "materialise events into the Delta lake"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``secureml-audit materialize``."""
    parser.description = ("Turn the event stream (Kafka, or the embedded log) into the Delta lake, each event "
                          "exactly once: a service until SIGINT/SIGTERM, or --once to catch up and stop. "
                          "Several instances in one consumer group may write one lake.")
    parser.add_argument("--log-dir", help="directory of the embedded log and the lake (default: "
                        "$SECUREML_AUDIT_LOG_DIR or secureml_audit_logs)")
    parser.add_argument("--bootstrap-servers", help="Kafka bootstrap servers (default: "
                        "$SECUREML_AUDIT_BOOTSTRAP_SERVERS; none = embedded log)")
    parser.add_argument("--topic", help=f"Kafka topic (default: $SECUREML_AUDIT_TOPIC or {DEFAULT_TOPIC})")
    parser.add_argument("--lake-uri", help="where the Delta table lives, e.g. s3://bucket/audit/events "
                        "(default: $SECUREML_AUDIT_LAKE_URI or LOG_DIR/lake/events)")
    parser.add_argument("--group", default=DEFAULT_GROUP, help="Kafka consumer group")
    parser.add_argument("--instance-id", help="this instance's static member id in the group (default: host and "
                        "lake); give each of several instances on one host its own")
    parser.add_argument("--once", action="store_true", help="stop when caught up with the end seen at start")
    parser.add_argument("--replay", action="store_true", help="rebuild the lake from the start of the log")
    parser.add_argument("--batch-events", type=int, default=200_000, help="events per commit at most")
    parser.add_argument("--commit-interval", type=float, help="seconds between commits (default: 0.5 for a service; "
                        "with --once, a commit every --batch-events events and one when caught up)")
    parser.add_argument("--progress", action="store_true", help="report progress every second (default: every 5 s)")
    parser.add_argument("--witness", nargs=2, action="append", metavar=("URL", "VKEY"),
                        help="a witness to submit each checkpoint to: its URL and cosignature vkey (repeatable; "
                        "default: $SECUREML_AUDIT_WITNESSES, URL VKEY pairs)")


def run(args: argparse.Namespace) -> int:
    """Materialise until stopped (SIGINT/SIGTERM) or, with --once, until caught up."""
    witnesses = None if args.witness is None else [token for pair in args.witness for token in pair]
    if witnesses is not None:
        from secureml.integrity.cosigning import parse_witnesses

        try:
            parse_witnesses(witnesses)
        except AuditError as exc:
            _stderr(f"secureml-audit materialize: {exc}")
            return 2
    if not resolve_config(log_dir=args.log_dir, bootstrap_servers=args.bootstrap_servers).bootstrap_servers:
        existing_log_dir(args.log_dir, "materialize")  # the embedded log is read from there: it must exist
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stats = materialize(
        args.log_dir, bootstrap_servers=args.bootstrap_servers, topic=args.topic, group=args.group,
        once=args.once, replay=args.replay, stop=stop, progress=_stderr, lake_uri=args.lake_uri,
        instance_id=args.instance_id,
        witnesses=witnesses,
        batch_events=args.batch_events, commit_interval=args.commit_interval,
        report_interval=1.0 if args.progress else 5.0,
    )
    _stderr(f"done: {stats.events:,} events in {stats.seconds:.1f}s ({stats.rate:,.0f}/s), "
            f"{stats.dead_letters} dead letters, {stats.compacted_files} files compacted"
            + ("" if stats.signed is not False else "; NOT SIGNED (no signing key: secureml-audit keygen)"))
    return 0
