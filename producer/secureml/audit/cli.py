"""The ``secureml-audit`` command: demo, materialize, query, and the consumers' subcommands."""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from secureml.audit.config import DEFAULT_TOPIC
from secureml.audit.exceptions import AuditError

# Subcommands implemented by other packages: name -> (module, help). Each module provides
# configure_parser(parser) and run(args) -> int.
PLUGGED: dict[str, tuple[str, str]] = {
    "report": ("secureml.reporting.cli", "write audit reports (PDF/HTML), on demand or on a schedule"),
    "alerts": ("secureml.alerting.cli", "raise compliance alerts from the event stream"),
    "verify": ("secureml.audit.integrity.cli", "verify hash chains and signed checkpoints of a lake"),
    "keygen": ("secureml.audit.integrity.keygen_cli", "create the key pair that signs the lake's checkpoints"),
    "prove": ("secureml.audit.integrity.prove_cli", "print a proof that an event is covered by a signed checkpoint"),
    "verify-proof": ("secureml.audit.integrity.verify_proof_cli", "check an inclusion proof with the public key alone"),
}


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _add_source_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-dir", help="directory of the embedded log and the lake (default: "
                        "$SECUREML_AUDIT_LOG_DIR or secureml_audit_logs)")
    parser.add_argument("--bootstrap-servers", help="Kafka bootstrap servers (default: "
                        "$SECUREML_AUDIT_BOOTSTRAP_SERVERS; none = embedded log)")
    parser.add_argument("--topic", help=f"Kafka topic (default: $SECUREML_AUDIT_TOPIC or {DEFAULT_TOPIC})")


def _run_materialize(args: argparse.Namespace) -> int:
    from secureml.materializer import materialize

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stats = materialize(
        args.log_dir, bootstrap_servers=args.bootstrap_servers, topic=args.topic, group=args.group,
        once=args.once, replay=args.replay, stop=stop, progress=_stderr,
        batch_events=args.batch_events, commit_interval=args.commit_interval,
    )
    _stderr(f"done: {stats.events:,} events in {stats.seconds:.1f}s ({stats.rate:,.0f}/s), "
            f"{stats.dead_letters} dead letters, {stats.compacted_files} files compacted")
    return 0


def _print_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    widths = {c: min(40, max([len(c)] + [len(str(r.get(c, ""))) for r in rows])) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, ""))[: widths[c]].ljust(widths[c]) for c in columns))


def _run_query(args: argparse.Namespace) -> int:
    from secureml.audit.query import get_audit_logs

    logs = get_audit_logs(
        args.operation_id, args.operation_name, args.start_time, args.end_time, args.log_dir,
        event_type=args.event_type, user=args.user, limit=args.limit,
    )
    if args.format == "json":
        json.dump(logs, sys.stdout, indent=2, default=str)
        print()
    elif args.format == "csv":
        columns = sorted({k for log in logs for k in log}, key=lambda k: (k not in logs[0], k)) if logs else []
        writer = csv.DictWriter(sys.stdout, fieldnames=columns)
        writer.writeheader()
        for log in logs:
            writer.writerow({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in log.items()})
    else:
        _print_table(logs, ["timestamp", "operation_name", "seq", "event_type", "user"])
        _stderr(f"{len(logs)} event(s)")
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from secureml.audit.demo import run_demo

    run_demo(args.log_dir, inferences=args.inferences, out=print)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="secureml-audit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run a realistic ML workflow from the user guide, then query it")
    demo.add_argument("--log-dir", default="secureml_audit_demo", help="where to write (default: %(default)s)")
    demo.add_argument("--inferences", type=int, default=5000, help="predictions to log (default: %(default)s)")
    demo.set_defaults(handler=_run_demo)

    mat = sub.add_parser("materialize", help="materialise events into the Parquet lake")
    _add_source_options(mat)
    mat.add_argument("--group", default="secureml-audit-materializer", help="Kafka consumer group")
    mat.add_argument("--once", action="store_true", help="stop when caught up with the end seen at start")
    mat.add_argument("--replay", action="store_true", help="rebuild the lake from the start of the log")
    mat.add_argument("--batch-events", type=int, default=200_000, help="events per commit at most")
    mat.add_argument("--commit-interval", type=float, default=0.2, help="seconds between commits")
    mat.set_defaults(handler=_run_materialize)

    query = sub.add_parser("query", help="print audit events matching filters")
    query.add_argument("--log-dir")
    query.add_argument("--operation-id")
    query.add_argument("--operation-name")
    query.add_argument("--start-time", help="ISO 8601, naive = UTC")
    query.add_argument("--end-time", help="ISO 8601, naive = UTC")
    query.add_argument("--event-type")
    query.add_argument("--user")
    query.add_argument("--limit", type=int)
    query.add_argument("--format", choices=["table", "json", "csv"], default="table")
    query.set_defaults(handler=_run_query)

    for name, (module, help_text) in PLUGGED.items():
        plugged = sub.add_parser(name, help=help_text)
        plugged.set_defaults(handler=_plugged(module), plugged_module=module)
        try:
            importlib.import_module(module).configure_parser(plugged)
        except ModuleNotFoundError:
            plugged.set_defaults(handler=_missing(name, module))
    return parser


def _plugged(module: str) -> Callable[[argparse.Namespace], int]:
    return lambda args: int(importlib.import_module(module).run(args))


def _missing(name: str, module: str) -> Callable[[argparse.Namespace], int]:
    def fail(_args: argparse.Namespace) -> int:
        _stderr(f"secureml-audit {name}: not available in this installation ({module} is missing)")
        return 2

    return fail


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except AuditError as exc:
        _stderr(f"secureml-audit {args.command}: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
