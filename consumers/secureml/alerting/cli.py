"""`secureml-audit alerts`: run the compliance rules on the event stream and publish alerts.

    secureml-audit alerts [--bootstrap-servers B | --log-dir D] [--topic T] [--rules rules.yaml]
                          [--sink stdout | jsonl:PATH | webhook:URL]... [--once] [--group G]
    secureml-audit alerts --list-rules [--rules rules.yaml]
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from secureml.alerting.alerter import DEFAULT_ALERTS_TOPIC, DEFAULT_GROUP, Alerter
from secureml.alerting.config import configured_rules, load_rules
from secureml.alerting.periods import Period, parse_seconds
from secureml.alerting.rule import Rule
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
    parser.add_argument("--list-rules", action="store_true",
                        help="print every rule, whether it is on (with --rules: under that file), what an off rule "
                             "needs and how to configure it, and its legal basis")


def run(args: argparse.Namespace) -> int:
    """Run the alerts subcommand; returns the process exit status."""
    if args.list_rules:
        print(list_rules(configured_rules(args.rules), args.rules))
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
          f"published before a restart, {stats.unreadable} unreadable, in {stats.seconds:.1f}s"
          + (f"; {stats.owed:,} still owed to slow or failing sinks (kept, delivered by the next run)"
             if stats.owed else ""), file=sys.stderr)
    return 0


def list_rules(rules: list[Rule], rules_file: str | None) -> str:
    """The --list-rules text: each rule's state, then what it finds, why, and how to configure it."""
    under = f"under {rules_file}" if rules_file else "with no rules file (the defaults)"
    on = sum(rule.active for rule in rules)
    waiting = sum(not rule.active and rule.options.enabled is not False for rule in rules)
    lines = [f"Rules {under}: {on} on, {waiting} off until configured, {len(rules) - on - waiting} switched off.", ""]
    for rule in rules:
        missing = rule.options.missing()
        if rule.active:
            state = "ON"
        elif rule.options.enabled is False:
            state = "OFF (enabled: false)"
        else:
            state = f"OFF, needs configuration: {', '.join(missing)}"
        lines += [f"{rule.rule_id}  {state}", f"    {rule.title}  [{rule.severity}, {rule.regulation} {rule.article}]"]
        if rule.basis:
            lines.append(f"    Basis: {rule.basis}")
        given = rule.options.given()
        if given:
            lines.append(f"    Set: {', '.join(_option(rule, name) for name in sorted(given))}")
        if not rule.active and missing and rule.example:
            lines.append(f"    Configure it in the rules file:  rules: {{{rule.rule_id}: {rule.example}}}")
        lines.append("")
    lines += [
        "A rules file (--rules FILE) is YAML: 'rules:' maps built-in rule ids to their options, 'custom:' lists "
        "your own Rule subclasses.",
        "Switch a rule off with {enabled: false}; every option is described in docs/rules.md.",
    ]
    return "\n".join(lines)


def _option(rule: Rule, name: str) -> str:
    """``name=value`` of an option as a rules file would write it (lengths of time as 30m, 2s, ...)."""
    value = getattr(rule.options, name)
    field = type(rule.options).model_fields[name]
    if any(getattr(m, "func", None) is parse_seconds for m in field.metadata):
        return f"{name}={Period(seconds=value)}"
    shown = rule.options.model_dump(include={name}, mode="json")[name]
    return f"{name}={shown}"
