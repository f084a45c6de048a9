"""Compliance audits of datasets, models and pipelines against GDPR, CCPA and HIPAA.

>>> from secureml.compliance import ComplianceAuditor
>>> auditor = ComplianceAuditor(regulation='GDPR', log_dir='audit_logs')
>>> report = auditor.audit_dataset(dataset=df, dataset_name='patient_records')  # doctest: +SKIP
"""

from __future__ import annotations

from .auditor import ComplianceAuditor
from .exceptions import ComplianceError, InvalidArgumentError, UnsupportedDatasetError
from .regulations import SUPPORTED_REGULATIONS
from .report import Advisory, CheckResult, ComplianceReport, Issue

__all__ = [
    "SUPPORTED_REGULATIONS",
    "Advisory",
    "CheckResult",
    "ComplianceAuditor",
    "ComplianceError",
    "ComplianceReport",
    "InvalidArgumentError",
    "Issue",
    "UnsupportedDatasetError",
]
