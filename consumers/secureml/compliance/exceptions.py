"""Errors raised by secureml.compliance: all are AuditErrors, beneath one root exception."""

from __future__ import annotations

from secureml.audit.exceptions import AuditError


class ComplianceError(AuditError):
    """Root of every error raised by secureml.compliance."""


class InvalidArgumentError(ComplianceError, ValueError):
    """An argument or a metadata field has a value the auditor cannot use."""


class UnsupportedDatasetError(ComplianceError, TypeError):
    """The dataset is of a type the auditor cannot read."""
