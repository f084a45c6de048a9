"""Integrity status of the lake, from the verifier (secureml.integrity.verify)."""

from __future__ import annotations

from pathlib import Path

from secureml.integrity import verify
from secureml.integrity.keys import default_key_path, public_key_path
from secureml.reporting import formatting as fmt
from secureml.reporting.document import Facts, Section, Text


def integrity_section(from_lake: bool, log_dir: str | None) -> tuple[Section, str]:
    """The verifier's verdict on the lake and a one-word status for the cover ('verified', ...)."""
    if not from_lake:
        return _unverified(
            "The report was built from events passed to it, not read from the lake; run the verifier "
            "(secureml.audit.verify) on the lake to prove nothing was altered or removed."
        )
    try:
        result = verify(log_dir, public_key=_configured_public_key())
    except Exception as error:  # the report must still be written; the failure is shown instead of hidden
        return _unverified(f"The verifier could not run: {type(error).__name__}: {error}")
    where = log_dir if log_dir is not None else "the default log_dir"
    facts = Facts(tuple((str(k).replace("_", " ").capitalize(), fmt.truncate(v)) for k, v in result.summary().items()))
    if result.ok:
        verdict = Text(f"Verified: the hash chains of the whole lake at {where} are intact and complete.", "good")
        return Section("Integrity", (verdict, facts)), "verified"
    verdict = Text(f"FAILED: the verifier found altered, missing or out-of-order events in {where}.", "bad")
    return Section("Integrity", (verdict, facts)), "FAILED"


def _configured_public_key() -> Path | None:
    """The public key of this machine's signing key, when there is one: trusted, unlike the lake's own copy."""
    path = public_key_path(default_key_path())
    return path if path.is_file() else None


def _unverified(reason: str) -> tuple[Section, str]:
    """The section shown when no verification ran, with the reason."""
    return Section("Integrity", (Text(f"Not verified. {reason}", "muted"),)), "not verified"
