"""Errors raised by secureml.integrity, beneath secureml.audit's root AuditError."""

from __future__ import annotations

from secureml.audit.exceptions import AuditError


class IntegrityError(AuditError):
    """Root of the integrity layer's errors."""


class SigningKeyError(IntegrityError, RuntimeError):
    """A signing or public key is missing, unreadable, exposed, or not an Ed25519 key."""


class CheckpointError(IntegrityError, RuntimeError):
    """A checkpoint could not be written (or the lake holds less than the last one covered)."""


class ProofError(IntegrityError, ValueError):
    """An inclusion proof could not be made, or does not hold."""
