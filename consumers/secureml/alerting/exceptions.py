"""Errors raised by secureml.alerting: all are AuditErrors, one class per kind of failure."""

from __future__ import annotations

from secureml.audit.exceptions import AuditError


class AlertingError(AuditError):
    """Root of every error raised by the alerting consumer."""


class RuleConfigError(AlertingError, ValueError):
    """A rules file (or a rule's options) is invalid; names the call, the rule, and the file, line and field.

    ``call`` is what was called (``load_rules('rules.yaml')``, ``Alerter(rules=...)``,
    ``BulkAccess(...)``); ``field`` is the dotted option path (from the file's top in a rules
    file, so it names the rule there too).
    """

    def __init__(self, problem: str, *, path: str | None = None, line: int | None = None,
                 field: str | None = None, rule: str | None = None, call: str | None = None) -> None:
        self.problem = problem
        self.path = path
        self.line = line
        self.field = field
        self.rule = rule
        self.call = call
        where = ":".join(str(p) for p in (path, line) if p is not None) if path or line else None
        named_rule = f"rule {rule!r}" if rule and not (field and f".{rule}" in f".{field}") else None
        super().__init__(": ".join(part for part in (call, where, named_rule, field, problem) if part))


class RuleError(AlertingError, RuntimeError):
    """A rule raised while handling an event or a timer; nothing past it was checkpointed."""


class AlertDeliveryError(AlertingError, RuntimeError):
    """Alerts could not be confirmed delivered to the alerts topic or a sink; the state was not advanced."""


class AlertStateError(AlertingError, RuntimeError):
    """The alerter's state file is unreadable, belongs to another source, or cannot be written."""
