"""Errors raised by secureml.audit: one root, one class per kind of failure."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from secureml.audit.transports.base import DeliveryReport

_Call = TypeVar("_Call", bound=Callable[..., Any])


class AuditError(Exception):
    """Root of every error raised by secureml-audit."""

    #: The public call the error came from (e.g. ``ComplianceAuditor.audit_model``), once named.
    where: str | None = None

    def at(self, where: str) -> AuditError:
        """Name the public call at the head of the message, unless one is named already; returns self."""
        if self.where is None:
            self.where = where
            self.args = (f"{where}: {self.args[0] if self.args else ''}", *self.args[1:])
        return self


def naming_the_call(where: str) -> Callable[[_Call], _Call]:
    """Decorate a public entry point so that the AuditErrors it raises name it (``where``)."""

    def decorate(function: _Call) -> _Call:
        @functools.wraps(function)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except AuditError as exc:
                exc.at(where)
                raise

        return call  # type: ignore[return-value]

    return decorate


class AuditValidationError(AuditError, ValueError):
    """An argument broke a rule; nothing of the call was recorded."""

    def __init__(self, field: str, rule: str, *, where: str | None = None) -> None:
        self.field = field
        self.rule = rule
        self.where = where
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}invalid '{field}': {rule}")


class AuditConfigError(AuditError, ValueError):
    """The configuration (arguments or SECUREML_AUDIT_* variables) is unusable."""


class AuditClosedError(AuditError, RuntimeError):
    """An event was logged on an audit trail that is already closed."""


class AuditTransportError(AuditError, RuntimeError):
    """The transport could not take an event (broker unreachable for too long, disk full, ...)."""


class AuditDeliveryError(AuditTransportError):
    """flush() or close() could not confirm that every event was stored."""

    def __init__(self, report: DeliveryReport) -> None:
        self.report = report
        super().__init__(
            f"{report.failed} audit event(s) failed and {report.pending} are still unconfirmed "
            f"out of {report.sent} sent ({'; '.join(report.errors[:3]) or 'timed out'}). "
            "Check that the broker is reachable (SECUREML_AUDIT_BOOTSTRAP_SERVERS) or that "
            "log_dir is writable, then call flush() again with a longer timeout."
        )


class LakeError(AuditError, RuntimeError):
    """The lake under log_dir is missing, locked or inconsistent."""


class LakeDamageWarning(UserWarning):
    """Part of the lake is gone (a data file of the version read): readers serve the rest and name what is missing."""
