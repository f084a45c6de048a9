"""``secureml-audit retention``: apply a retention policy (once or on a schedule) and manage legal holds.

    secureml-audit retention apply --log-dir D [--policy F] [--dry-run] [--every 1d]
    secureml-audit retention hold add|remove (--operation-id X | --operation-name X | --subject X) [--reason R]
    secureml-audit retention hold list
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import signal
import sys
import threading
from types import FrameType

from secureml.audit.exceptions import AuditValidationError
from secureml.reporting.exceptions import InvalidScheduleError
from secureml.reporting.schedule import Schedule, parse_every
from secureml.retention.apply import apply_retention
from secureml.retention.exceptions import RetentionError
from secureml.retention.holds import add_hold, list_holds, remove_hold
from secureml.retention.policy import load_policy

log = logging.getLogger(__name__)

HELP = "expire events under a retention policy (signed records) and manage legal holds"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the retention subcommands."""
    parser.description = ("Delete events whose retention has passed from the lake (one Delta commit, vacuumed), "
                          "except those under legal hold, and write a signed retention record so that `verify` "
                          "tells expiry from tampering; manage the legal holds.")
    actions = parser.add_subparsers(dest="retention_action", required=True, metavar="ACTION",
                                    help="apply, or hold")
    apply = actions.add_parser("apply", help="delete expired events and sign a retention record",
                               description="Delete the events the policy has expired and no legal hold keeps, "
                               "vacuum their files, and sign a record of what was removed.")
    apply.add_argument("--log-dir", help="directory that holds lake/ (default: $SECUREML_AUDIT_LOG_DIR or "
                       "secureml_audit_logs)")
    apply.add_argument("--policy", metavar="FILE", help="retention policy, YAML or JSON (default: model_inference "
                       "6mo, compliance_check 7y, everything else kept)")
    apply.add_argument("--dry-run", action="store_true", help="count what would expire; change nothing")
    apply.add_argument("--every", metavar="PERIOD", help="run as a service, once per period (1h, 1d, or a 5-field "
                       "cron expression in UTC)")
    hold = actions.add_parser("hold", help="add, remove or list legal holds",
                              description="Legal holds keep an operation's or a data subject's events whatever "
                              "the retention policy says, until the hold is removed.")
    holds = hold.add_subparsers(dest="hold_action", required=True, metavar="ACTION", help="add, remove or list")
    for name, text in (("add", "place a legal hold"), ("remove", "lift a legal hold"), ("list", "list legal holds")):
        command = holds.add_parser(name, help=text, description=f"{text.capitalize()} (stored owner-only in "
                                   "lake/_retention/holds.json).")
        command.add_argument("--log-dir", help="directory that holds lake/ (default: $SECUREML_AUDIT_LOG_DIR or "
                             "secureml_audit_logs)")
        if name == "list":
            continue
        command.add_argument("--operation-id", help="hold every event of this operation")
        command.add_argument("--operation-name", help="hold every event of operations with this name")
        command.add_argument("--subject", help="hold every event whose user or user_id is this data subject")
        if name == "add":
            command.add_argument("--reason", default="", help="why (a case number, a regulator's request)")


def run(args: argparse.Namespace) -> int:
    """Run one retention action; 0 on success (bad input raises AuditValidationError: exit 2)."""
    if args.retention_action == "hold":
        return _hold(args)
    policy = load_policy(args.policy)
    if args.every is None:
        print(apply_retention(args.log_dir, policy, dry_run=args.dry_run).summary())
        return 0
    try:
        schedule = parse_every(args.every)
    except InvalidScheduleError as exc:
        raise AuditValidationError("--every", str(exc), where="retention apply") from None
    return _serve(args, policy, schedule)


def _hold(args: argparse.Namespace) -> int:
    if args.hold_action == "list":
        for hold in list_holds(args.log_dir):
            print(f"{hold.kind}\t{hold.value}\t{hold.created_at}\t{hold.reason}")
        return 0
    given = [(kind, value) for kind, value in (("operation_id", args.operation_id),
                                                ("operation_name", args.operation_name), ("subject", args.subject))
             if value is not None]
    if len(given) != 1:
        raise AuditValidationError("--operation-id/--operation-name/--subject", f"give exactly one, got {len(given)}",
                                   where=f"retention hold {args.hold_action}")
    kind, value = given[0]
    if args.hold_action == "add":
        hold = add_hold(args.log_dir, kind, value, args.reason)
        print(f"held: {hold.kind} {hold.value} (since {hold.created_at})")
        return 0
    if not remove_hold(args.log_dir, kind, value):
        print(f"secureml-audit retention hold remove: no hold on {kind} {value}", file=sys.stderr)
        return 1
    print(f"released: {kind} {value}")
    return 0


def _serve(args: argparse.Namespace, policy: object, schedule: Schedule) -> int:
    """Apply retention at every boundary of the schedule until SIGTERM or Ctrl-C."""
    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, request_stop)
    try:
        while not stop.is_set():
            try:
                print(apply_retention(args.log_dir, policy, dry_run=args.dry_run).summary(), flush=True)  # type: ignore[arg-type]
            except RetentionError as exc:
                log.warning("retention not applied this period (tried again at the next): %s", exc)
            now = dt.datetime.now(dt.UTC)
            stop.wait(max((schedule.next_boundary(now) - now).total_seconds(), 1.0))
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0
