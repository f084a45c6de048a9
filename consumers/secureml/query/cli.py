"""``secureml-audit query``: print the audit events that match filters, as a table, JSON or CSV."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from typing import Any

from secureml.query.logs import get_audit_logs

HELP = "print audit events matching filters"


def _as_of(value: str) -> int | str:
    """A Delta version number, or a time (ISO 8601)."""
    return int(value) if value.isdigit() else value


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``secureml-audit query``."""
    parser.add_argument("--log-dir")
    parser.add_argument("--operation-id")
    parser.add_argument("--operation-name")
    parser.add_argument("--start-time", help="ISO 8601, naive = UTC")
    parser.add_argument("--end-time", help="ISO 8601, naive = UTC")
    parser.add_argument("--event-type")
    parser.add_argument("--user")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--as-of", type=_as_of, metavar="VERSION|TIME",
                        help="the lake as it was at a Delta version (a number) or a time (ISO 8601)")
    parser.add_argument("--format", choices=["table", "json", "csv"], default="table")


def _print_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    widths = {c: min(40, max([len(c)] + [len(str(r.get(c, ""))) for r in rows])) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, ""))[: widths[c]].ljust(widths[c]) for c in columns))


def run(args: argparse.Namespace) -> int:
    """Print the matching events."""
    logs = get_audit_logs(
        args.operation_id, args.operation_name, args.start_time, args.end_time, args.log_dir,
        event_type=args.event_type, user=args.user, limit=args.limit, as_of=args.as_of,
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
        print(f"{len(logs)} event(s)", file=sys.stderr)
    return 0
