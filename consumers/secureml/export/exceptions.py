"""Errors of exports: bad input is an ``AuditValidationError``; a sink that cannot deliver raises these."""

from __future__ import annotations

from secureml.audit.exceptions import AuditTransportError


class ExportSinkError(AuditTransportError):
    """A sink could not take a batch (HTTP server down past the deadline, Kafka transaction failed, ...)."""
