"""Real-time compliance alerting on the audit event stream.

``Alerter(rules, bootstrap_servers=..., sinks=[...]).run()`` reads the audit events (Kafka
topic ``audit-events``, or the embedded log of ``log_dir``), runs the rules, and publishes each
alert exactly once to Kafka topic ``audit-alerts`` (Avro, ``schemas/audit_alert.v1.avsc``,
keyed by operation_id) or to ``log_dir/alerts/alerts.jsonl``, and to every sink. Rules come
from ``load_rules("rules.yaml")``; write your own by subclassing ``Rule``. The command line is
``secureml-audit alerts``.
"""

from __future__ import annotations

from secureml.alerting.alert import Alert, Trigger
from secureml.alerting.alerter import Alerter, AlertStats
from secureml.alerting.builtin import BUILTIN_RULES
from secureml.alerting.config import load_rules
from secureml.alerting.event import Event
from secureml.alerting.exceptions import (
    AlertDeliveryError,
    AlertingError,
    AlertStateError,
    RuleConfigError,
    RuleError,
)
from secureml.alerting.rule import Rule, RuleContext, RuleOptions
from secureml.alerting.sinks import JsonlSink, Sink, StdoutSink, WebhookSink

__all__ = [
    "BUILTIN_RULES",
    "Alert",
    "AlertDeliveryError",
    "AlertStateError",
    "AlertStats",
    "Alerter",
    "AlertingError",
    "Event",
    "JsonlSink",
    "Rule",
    "RuleConfigError",
    "RuleContext",
    "RuleError",
    "RuleOptions",
    "Sink",
    "StdoutSink",
    "Trigger",
    "WebhookSink",
    "load_rules",
]
