"""Errors raised by secureml.reporting: all are AuditErrors, one root, one class per kind of failure."""

from __future__ import annotations

from secureml.audit.exceptions import AuditError, AuditValidationError


class ReportingError(AuditError):
    """Root of every error raised by secureml.reporting."""

    #: The caller's input is at fault (the command line exits with status 2), not the lake or the disk.
    bad_input = False


class ReportArgumentError(ReportingError, AuditValidationError):
    """An argument of a report call breaks a rule; the error names the argument and the rule."""

    bad_input = True

    def __init__(self, field: str, rule: str) -> None:
        """The argument (``logs[3]['seq']``, ``title``) and the rule it breaks."""
        AuditValidationError.__init__(self, field, rule)


class UnsupportedFormatError(ReportingError, ValueError):
    """The output file name does not end in a format the generator can write."""

    bad_input = True

    def __init__(self, output_file: str, suffix: str) -> None:
        """The file asked for and its unsupported suffix."""
        self.output_file = output_file
        shown = suffix or "(no extension)"
        super().__init__(
            f"Unknown report format {shown!r} for output_file {output_file!r}: "
            "use a file name ending in .pdf (printable) or .html (interactive charts)."
        )


class OutputNotWritableError(ReportingError, OSError):
    """The report cannot be written where it was asked for."""

    def __init__(self, output_file: str, reason: str, *, bad_input: bool = False) -> None:
        """The file asked for and why it cannot be written; ``bad_input`` when the path itself is wrong."""
        self.output_file = output_file
        self.bad_input = bad_input
        super().__init__(
            f"Cannot write the report to output_file {output_file!r}: {reason}. "
            "Create the directory or fix its permissions, or choose another output path."
        )


class LogoError(ReportingError, ValueError):
    """The logo file cannot be used."""

    bad_input = True

    def __init__(self, logo_path: str, reason: str) -> None:
        """The logo asked for and why it cannot be used."""
        self.logo_path = logo_path
        super().__init__(
            f"Cannot use the logo_path {logo_path!r}: {reason}. "
            "Pass the path of a PNG or JPEG image as logo_path, or logo_path=None to omit the logo."
        )


class LogoNotFoundError(LogoError, FileNotFoundError):
    """The logo file does not exist."""

    def __init__(self, logo_path: str) -> None:
        """The logo asked for."""
        super().__init__(logo_path, "no such file")


class InvalidFiltersError(ReportingError, ValueError):
    """The filters given as logs name an unknown key or an unusable value."""

    bad_input = True


class InvalidReportInputError(ReportingError, TypeError):
    """The logs or compliance report given to the generator have an unusable shape."""

    bad_input = True


class InvalidScheduleError(ReportingError, ValueError):
    """An --every value is neither an interval (15m, 1h, 1d) nor a valid 5-field cron expression."""

    bad_input = True


class LakeUnavailableError(ReportingError, RuntimeError):
    """The audit lake cannot be opened: its log_dir does not exist."""

    bad_input = True


class ReportStateError(ReportingError, RuntimeError):
    """The scheduled reporter's state file in the output directory is unreadable."""


class ReportServiceBusyError(ReportingError, RuntimeError):
    """Another scheduled reporter holds the output directory."""
