"""Errors raised by secureml.integrity, beneath secureml.audit's root AuditError."""

from __future__ import annotations

from secureml.audit.exceptions import AuditConfigError, AuditError


class IntegrityError(AuditError):
    """Root of the integrity layer's errors."""


class SigningKeyError(IntegrityError, RuntimeError):
    """A signing or public key is missing, unreadable, exposed, or not an Ed25519 key."""


class CheckpointError(IntegrityError, RuntimeError):
    """A checkpoint could not be written (or the lake holds less than the last one covered)."""


class CheckpointPublishError(CheckpointError):
    """A checkpoint stored in the lake was not published to its Kafka topic (refused or unconfirmed)."""


class ProofError(IntegrityError, ValueError):
    """An inclusion proof could not be made, or does not hold."""


class NoteError(IntegrityError, ValueError):
    """A signed note, vkey or C2SP checkpoint is malformed, or a signature on it does not hold."""


class WitnessError(IntegrityError, RuntimeError):
    """A witness refused a checkpoint, could not be reached, or its configuration is wrong."""


class WitnessConfigError(WitnessError, AuditConfigError):
    """Witnesses are configured wrongly (a malformed URL or vkey, a topic witness without Kafka)."""
