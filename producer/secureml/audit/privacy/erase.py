"""Erasure of a data subject (GDPR Art. 17) by crypto-shredding: the subject's key is destroyed.

The events stay, with their hashes and proofs; the values encrypted under the key become
unreadable everywhere at once (``<erased>`` in every reader) and the subject's identifiers
remain only as pseudonyms. The erasure is itself an audit event ``subject_erased`` that holds
the pseudonym, never the erased id.
"""

from __future__ import annotations

import getpass
import os
from typing import Any

from secureml.audit import events as ev
from secureml.audit.config import resolve_config
from secureml.audit.privacy import _protectors, keystore_for
from secureml.audit.privacy.keys import pseudonym

ERASURE_EVENT = "subject_erased"
ERASURE_OPERATION = "subject_erasure"


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def erase_subject(
    subject: str,
    log_dir: str | os.PathLike[str] | None = None,
    *,
    reason: str | None = None,
    legal_basis: str | None = "GDPR Art. 17",
    erased_by: str | None = None,
    bootstrap_servers: str | None = None,
    topic: str | None = None,
) -> dict[str, Any]:
    """Destroy ``subject``'s key and record the erasure; returns what was done.

    The result holds ``subject`` (the pseudonym), ``key_destroyed`` (False when the subject had
    no key: nothing of it was encrypted, or it was erased before) and ``event_id`` of the
    ``subject_erased`` event (user: ``erased_by``, default the OS user; details: pseudonym,
    reason, legal basis).
    """
    w = "erase_subject"
    ev.text(subject, "subject", w)
    reason = ev.optional_text(reason, "reason", w)
    legal_basis = ev.optional_text(legal_basis, "legal_basis", w)
    erased_by = ev.optional_text(erased_by, "erased_by", w) or _who()
    bootstrap_servers = ev.optional_text(bootstrap_servers, "bootstrap_servers", w)  # checked before any key is touched
    topic = ev.optional_text(topic, "topic", w)
    config = resolve_config(log_dir=log_dir, bootstrap_servers=bootstrap_servers, topic=topic)
    store = keystore_for(config)
    name = pseudonym(store.pseudonym_key(), subject)
    destroyed = store.destroy(name)
    for protector in list(_protectors.values()):  # this process's trails must not keep using the key
        protector.forget(subject, name)
    from secureml.audit.trail import AuditTrail

    details = {"subject": name, "reason": reason, "legal_basis": legal_basis, "key_destroyed": destroyed}
    with AuditTrail(ERASURE_OPERATION, log_dir=log_dir, user=erased_by, bootstrap_servers=bootstrap_servers,
                    topic=topic, regulations=["GDPR"]) as trail:
        event_id = trail.log_event(ERASURE_EVENT, {k: v for k, v in details.items() if v is not None})
    return {**details, "event_id": event_id, "erased_by": erased_by}
