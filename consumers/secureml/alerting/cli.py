"""`secureml-audit alerts`: run the compliance rules on the event stream and publish alerts.

    secureml-audit alerts [--bootstrap-servers B | --log-dir D] [--topic T] [--rules rules.yaml]
                          [--sink stdout | jsonl:PATH | webhook:URL]... [--once] [--group G]
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from secureml.alerting.alerter import DEFAULT_ALERTS_TOPIC, DEFAULT_GROUP, Alerter
from secureml.alerting.builtin import BUILTIN_RULES
from secureml.alerting.config import load_rules
from secureml.alerting.sinks import parse_sink
from secureml.audit.config import DEFAULT_TOPIC

HELP = "raise compliance alerts from the event stream"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the alerts subcommand's arguments to parser."""
    parser.description = "Run compliance rules on the audit event stream; publish each alert once."
    parser.add_argument("--bootstrap-servers", metavar="B",
                        help="Kafka bootstrap servers (default: $SECUREML_AUDIT_BOOTSTRAP_SERVERS; "
                             "none = embedded log)")
    parser.add_argument("--log-dir", metavar="DIR",
                        help="the embedded log to tail, and where alerts/state.json is kept in either mode "
                             "(default: $SECUREML_AUDIT_LOG_DIR or secureml_audit_logs)")
    parser.add_argument("--topic", help=f"events topic (default: $SECUREML_AUDIT_TOPIC or {DEFAULT_TOPIC})")
    parser.add_argument("--alerts-topic", default=DEFAULT_ALERTS_TOPIC,
                        help="Kafka topic of the alerts (default: %(default)s)")
    parser.add_argument("--rules", metavar="FILE",
                        help="YAML rules file (default: every built-in rule with its default options)")
    parser.add_argument("--sink", action="append", default=[], metavar="SINK",
                        help="also send alerts to stdout, jsonl:PATH or webhook:URL (repeatable)")
    parser.add_argument("--group", default=DEFAULT_GROUP, help="Kafka consumer group (default: %(default)s)")
    parser.add_argument("--once", action="store_true", help="stop when caught up with the log as it was at start")
    parser.add_argument("--list-rules", action="store_true", help="print the built-in rules and their legal basis")


def run(args: argparse.Namespace) -> int:
    """Run the alerts subcommand; returns the process exit status."""
    if args.list_rules:
        for rule in BUILTIN_RULES.values():
            print(f"{rule.id}  [{rule.severity}, {rule.regulation} {rule.article}]\n    {rule.title}\n    {rule.basis}")
        return 0
    rules = load_rules(args.rules)
    alerter = Alerter(
        rules, log_dir=args.log_dir, bootstrap_servers=args.bootstrap_servers,
        topic=args.topic, alerts_topic=args.alerts_topic, sinks=[parse_sink(s) for s in args.sink], group=args.group,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stats = alerter.run(once=args.once, stop=stop)
    print(f"done: {stats.events:,} events, {stats.alerts:,} alerts published, {stats.already_published} already "
          f"published before a restart, {stats.unreadable} unreadable, in {stats.seconds:.1f}s", file=sys.stderr)
    return 0
