"""``secureml-audit query``: print the audit events that match filters, as a table, JSON or CSV."""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections.abc import Sequence
from typing import Any

from secureml.audit.config import existing_log_dir
from secureml.query.logs import get_audit_logs

HELP = "print audit events matching filters"


def _as_of(value: str) -> int | str:
    """A Delta version number, or a time (ISO 8601)."""
    return int(value) if value.isdigit() else value


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``secureml-audit query``."""
    parser.description = ("Print the audit events that match every filter given, in time order (then seq), as a "
                          "table, JSON or CSV, from the lake and the embedded log's newest events.")
    parser.add_argument("--log-dir", metavar="DIR",
                        help="the folder the audit trail logs to (default $SECUREML_AUDIT_LOG_DIR or "
                        "secureml_audit_logs)")
    parser.add_argument("--operation-id", metavar="ID", help="events of this operation only")
    parser.add_argument("--operation-name", metavar="NAME", help="events of operations with exactly this name")
    parser.add_argument("--start", "--start-time", dest="start_time", metavar="TIME",
                        help="first event time, ISO 8601, UTC when naive (--start-time still works)")
    parser.add_argument("--end", "--end-time", dest="end_time", metavar="TIME",
                        help="last event time, inclusive (--end-time still works)")
    parser.add_argument("--event-type", metavar="TYPE", help="e.g. data_access, model_inference, user_request")
    parser.add_argument("--user", metavar="USER", help="events logged for this user only (the id as logged; "
                        "matched through its pseudonym)")
    parser.add_argument("--subject", metavar="ID", help="events of this data subject only: its requests, events it "
                        "is the user of, and values encrypted for it")
    parser.add_argument("--limit", type=int, metavar="N", help="at most N events")
    parser.add_argument("--as-of", type=_as_of, metavar="VERSION|TIME",
                        help="the lake as it was at a Delta version (a number) or a time (ISO 8601)")
    parser.add_argument("--format", choices=["table", "json", "csv"], default="table",
                        help="table (default; control characters shown escaped), json or csv")


# C0 and C1 controls (ESC starts terminal escape sequences) and the bidirectional overrides that
# reorder what a terminal shows: an event's text must never act on the terminal that prints it.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def safe_text(value: object) -> str:
    """``str(value)`` with control characters shown as escapes (``\\x1b``), never sent to the terminal."""
    text = "" if value is None else str(value)
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _print_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    cells = [{c: safe_text(r.get(c)) for c in columns} for r in rows]
    widths = {c: min(40, max([len(c)] + [len(cell[c]) for cell in cells])) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for cell in cells:
        print("  ".join(cell[c][: widths[c]].ljust(widths[c]) for c in columns))


def run(args: argparse.Namespace) -> int:
    """Print the matching events."""
    log_dir = existing_log_dir(args.log_dir, "query")
    logs = get_audit_logs(
        args.operation_id, args.operation_name, args.start_time, args.end_time, log_dir,
        event_type=args.event_type, user=args.user, subject=args.subject, limit=args.limit, as_of=args.as_of,
    )
    if args.format == "json":
        json.dump(logs, sys.stdout, indent=2, default=str)
        print()
    elif args.format == "csv":
        columns = sorted({k for log in logs for k in log}, key=lambda k: (k not in logs[0], k)) if logs else []
        writer = csv.DictWriter(sys.stdout, fieldnames=columns)
        writer.writeheader()
        for log in logs:
            writer.writerow({k: safe_text(json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in log.items()})
    else:
        _print_table(logs, ["timestamp", "operation_name", "seq", "event_type", "user"])
        print(f"{len(logs)} event(s)", file=sys.stderr)
    return 0
