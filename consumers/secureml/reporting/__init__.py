"""Audit and compliance reports as PDF or self-contained HTML, on demand or on a schedule."""

from __future__ import annotations

from secureml.reporting.exceptions import (
    InvalidFiltersError,
    InvalidReportInputError,
    InvalidScheduleError,
    LakeUnavailableError,
    LogoError,
    LogoNotFoundError,
    OutputNotWritableError,
    ReportingError,
    ReportServiceBusyError,
    ReportStateError,
    UnsupportedFormatError,
)
from secureml.reporting.generator import ReportGenerator

__all__ = [
    "InvalidFiltersError",
    "InvalidReportInputError",
    "InvalidScheduleError",
    "LakeUnavailableError",
    "LogoError",
    "LogoNotFoundError",
    "OutputNotWritableError",
    "ReportGenerator",
    "ReportServiceBusyError",
    "ReportStateError",
    "ReportingError",
    "UnsupportedFormatError",
]
