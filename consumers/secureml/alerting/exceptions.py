"""Errors raised by secureml.alerting: all are AuditErrors, one class per kind of failure."""

from __future__ import annotations

from secureml.audit.exceptions import AuditError


class AlertingError(AuditError):
    """Root of every error raised by the alerting consumer."""


class RuleConfigError(AlertingError, ValueError):
    """A rules file (or a rule's options) is invalid; names the file, line and field when known."""

    def __init__(self, problem: str, *, path: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        self.problem = problem
        self.path = path
        self.line = line
        self.field = field
        where = ":".join(str(p) for p in (path or "<rules>", line) if p is not None)
        named = f"{field}: " if field else ""
        super().__init__(f"{where}: {named}{problem}")


class RuleError(AlertingError, RuntimeError):
    """A rule raised while handling an event or a timer; nothing past it was checkpointed."""


class AlertDeliveryError(AlertingError, RuntimeError):
    """Alerts could not be confirmed delivered to the alerts topic or a sink; the state was not advanced."""


class AlertStateError(AlertingError, RuntimeError):
    """The alerter's state file is unreadable, belongs to another source, or cannot be written."""
