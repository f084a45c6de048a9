"""The regulations an auditor can check against, and how their names are spelled."""

from __future__ import annotations

from typing import Final

from .exceptions import InvalidArgumentError

SUPPORTED_REGULATIONS: Final = ("GDPR", "CCPA", "HIPAA")


def normalise_regulation(regulation: object) -> str:
    """Return the canonical name of a supported regulation, accepting any letter case."""
    if isinstance(regulation, str) and regulation.strip().upper() in SUPPORTED_REGULATIONS:
        return regulation.strip().upper()
    supported = ", ".join(repr(name) for name in SUPPORTED_REGULATIONS)
    raise InvalidArgumentError(
        f"regulation must be one of {supported}; got {regulation!r}. "
        "Pass one of them, e.g. ComplianceAuditor(regulation='GDPR')."
    )
