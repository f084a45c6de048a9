"""`secureml-audit report`: one report on demand, or the scheduled reporting service.

    secureml-audit report --log-dir D --output FILE [--start T] [--end T] [filters]
    secureml-audit report --log-dir D --output-dir O --every 1h|1d|CRON [--once] [filters]
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
from datetime import timedelta
from pathlib import Path
from types import FrameType

from secureml.reporting.exceptions import ReportingError
from secureml.reporting.generator import DEFAULT_TITLE, ReportGenerator
from secureml.reporting.schedule import parse_every
from secureml.reporting.service import ReportService

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


HELP = "write audit reports (PDF/HTML), on demand or on a schedule"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the report subcommand's arguments to parser."""
    parser.description = "Write an audit report (PDF or HTML) from the lake, once or one per period."
    parser.add_argument("--log-dir", metavar="DIR",
                        help="audit log directory holding the lake (default: $SECUREML_AUDIT_LOG_DIR or as configured)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--output", metavar="FILE", help="write one report to FILE; .pdf or .html picks the format")
    target.add_argument("--output-dir", metavar="DIR",
                        help="write one report per completed period into DIR (with --every)")
    schedule = parser.add_argument_group("scheduled reports (with --output-dir)")
    schedule.add_argument(
        "--every", metavar="PERIOD",
        help="period length: 15m, 1h, 1d (aligned on UTC) or a 5-field cron expression in UTC, e.g. '0 6 * * mon'",
    )
    schedule.add_argument("--once", action="store_true", help="report the completed periods, then exit")
    schedule.add_argument("--format", choices=("pdf", "html"), default=None,
                          help="format of scheduled reports (default pdf); with --output it must match FILE's suffix")
    schedule.add_argument("--grace", type=float, default=60.0, metavar="SECONDS",
                          help="wait this long after a period ends for late events (default 60)")
    selection = parser.add_argument_group("selection")
    selection.add_argument("--start", "--start-time", dest="start", metavar="TIME",
                           help="first event time, ISO 8601, UTC when naive (with --output)")
    selection.add_argument("--end", "--end-time", dest="end", metavar="TIME",
                           help="last event time, inclusive (with --output)")
    selection.add_argument("--operation-name", metavar="NAME", help="operations with exactly this name")
    selection.add_argument("--operation-id", metavar="ID", help="one operation")
    selection.add_argument("--event-type", metavar="TYPE", action="append", help="repeat for several types")
    selection.add_argument("--user", metavar="USER", help="events logged for this user")
    look = parser.add_argument_group("content")
    look.add_argument("--title", default=DEFAULT_TITLE, help="the cover's title (default: %(default)s)")
    look.add_argument("--logo", metavar="IMAGE", help="PNG or JPEG shown on the cover")
    look.add_argument("--no-charts", action="store_true", help="leave the charts out")
    look.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def run(args: argparse.Namespace) -> int:
    """Run the report subcommand; returns the process exit status."""
    usage = _usage_problem(args)
    if usage:
        print(f"secureml-audit report: error: {usage}", file=sys.stderr)
        return EXIT_USAGE
    filters: dict[str, object] = {
        key: value
        for key, value in (
            ("operation_name", args.operation_name),
            ("operation_id", args.operation_id),
            ("event_type", args.event_type),
            ("user", args.user),
        )
        if value is not None
    }
    try:
        if args.output is not None:
            return _report_once(args, filters)
        return _serve(args, filters)
    except ReportingError as error:
        print(f"secureml-audit report: error: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_USAGE if error.bad_input else EXIT_FAILED


def _usage_problem(args: argparse.Namespace) -> str:
    """What is wrong with the combination of arguments, or ''."""
    if args.output_dir is not None and args.every is None:
        return "--output-dir needs --every (e.g. --every 1d) to know the report periods"
    if args.output is not None and (args.every is not None or args.once):
        return "--every and --once schedule reports into --output-dir; use --output-dir instead of --output"
    if args.output_dir is not None and (args.start is not None or args.end is not None):
        return "--start/--end select one report's events; scheduled reports cover their periods (use --output)"
    if not math.isfinite(args.grace) or args.grace < 0:
        return f"--grace must be zero or more seconds, got {args.grace}"
    if args.output is not None and args.format is not None:
        suffix = Path(args.output).suffix.lower().lstrip(".")
        if suffix != args.format:
            return (f"--format {args.format} but --output {args.output} names a .{suffix or '(no suffix)'} file: "
                    f"the suffix picks the format, so name it {Path(args.output).with_suffix('.' + args.format)} "
                    "or drop --format")
    return ""


def _report_once(args: argparse.Namespace, filters: dict[str, object]) -> int:
    """Write one report to --output."""
    selection = {**filters, "log_dir": args.log_dir, "start_time": args.start, "end_time": args.end}
    generator = ReportGenerator(progress=False if args.quiet else None)
    path = generator.generate_audit_report(
        {k: v for k, v in selection.items() if v is not None}, args.output, title=args.title,
        logo_path=args.logo, include_charts=not args.no_charts,
    )
    print(path)
    return EXIT_OK


def _serve(args: argparse.Namespace, filters: dict[str, object]) -> int:
    """Run the scheduled reporter (one pass with --once)."""
    service = ReportService(
        log_dir=args.log_dir,
        output_dir=Path(args.output_dir),
        schedule=parse_every(args.every),
        every=args.every,
        filters=filters,
        title=args.title,
        logo_path=args.logo,
        include_charts=not args.no_charts,
        extension=f".{args.format or 'pdf'}",
        grace=timedelta(seconds=args.grace),
        progress=False if args.quiet else None,
    )
    if args.once:
        for path in service.run_once():
            print(path)
        return EXIT_OK
    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        """SIGTERM: finish the report being written, then stop."""
        stop.set()

    previous = signal.signal(signal.SIGTERM, request_stop)
    try:
        service.serve(stop, on_report=print)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    return EXIT_OK
