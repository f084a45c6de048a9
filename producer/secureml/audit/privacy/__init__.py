"""Privacy by design: pseudonyms, per-subject encryption with crypto-shredding, redaction of free text.

``PrivacyPolicy`` names what is personal; ``protector_for`` gives a trail the step that applies
it before sealing; ``reader_keystore`` and ``Revealer`` let readers show values as logged (or
``<erased>``); ``erase_subject`` destroys a subject's key and records the erasure.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from secureml.audit.privacy.keys import KEYSTORE_DIR_ENV, FileKeyStore, KeyStore, keystore_dir
from secureml.audit.privacy.policy import PrivacyPolicy, resolve_policy

if TYPE_CHECKING:
    from secureml.audit.config import AuditConfig
    from secureml.audit.privacy.protect import Protector

KEYSTORE_ENV = "SECUREML_AUDIT_KEYSTORE"  # "file" or "kafka" (default: kafka when the trail uses Kafka)

_protectors: dict[tuple[Any, ...], Protector] = {}
_guard = threading.Lock()


def keystore_kind(config: AuditConfig) -> str:
    """'kafka' (wrapped keys in ``<topic>-keys``) or 'file' (the embedded key store)."""
    kind = (os.environ.get(KEYSTORE_ENV) or "").strip().lower()
    if kind in ("file", "kafka"):
        return kind
    return "kafka" if config.bootstrap_servers else "file"


def keystore_for(config: AuditConfig) -> KeyStore:
    """The key store of a configuration: ``<topic>-keys`` on its brokers in Kafka mode, else files."""
    if keystore_kind(config) == "kafka" and config.bootstrap_servers:
        from secureml.audit.privacy.kafka_keys import KafkaKeyStore

        return KafkaKeyStore(config.bootstrap_servers, f"{config.topic}-keys", config.librdkafka_settings())
    return FileKeyStore(log_dir=config.log_dir)


def protector_for(policy: PrivacyPolicy, config: AuditConfig) -> Protector | None:
    """The privacy step for trails of this policy and configuration (shared: keys are cached per process)."""
    if not policy.enabled:
        return None
    from secureml.audit.privacy.keys import refuse_inside
    from secureml.audit.privacy.protect import Protector

    kind = keystore_kind(config)
    if kind == "file":
        refuse_inside(keystore_dir(), config.log_dir)
    cache_key = (policy, kind, str(keystore_dir()), config.bootstrap_servers if kind == "kafka" else None,
                 config.topic if kind == "kafka" else None, os.environ.get("SECUREML_AUDIT_KEK"),
                 os.environ.get("SECUREML_AUDIT_KEK_FILE"))
    with _guard:
        protector = _protectors.get(cache_key)
        if protector is None:
            protector = _protectors[cache_key] = Protector(policy, lambda: keystore_for(config))
    return protector


LOCATION_FILE = "keystore.json"  # in log_dir: where the keys of a lake materialised from Kafka are


def record_location(config: AuditConfig) -> None:
    """Note in ``log_dir`` which key topic a lake materialised from Kafka uses (no secret: brokers and topic),
    so that its readers find the keys with ``log_dir`` alone."""
    if keystore_kind(config) != "kafka" or not config.bootstrap_servers:
        return
    import json

    from secureml.audit import _fs

    path = config.log_dir / LOCATION_FILE
    text = json.dumps({"keystore": "kafka", "bootstrap_servers": config.bootstrap_servers,
                       "topic": f"{config.topic}-keys"}, sort_keys=True).encode()
    if not path.is_file() or path.read_bytes() != text:
        _fs.make_private_dir(config.log_dir, link_ok=True)
        _fs.write_atomically(path, text)


def reader_keystore(log_dir: Path | None = None) -> KeyStore | None:
    """The key store a reader uses, or None when there is none to read (values then stay as stored).

    ``SECUREML_AUDIT_KEYSTORE=kafka`` with brokers configured, else the key topic noted in
    ``log_dir`` by the materializer, else the embedded key store when it exists.
    """
    from secureml.audit.config import resolve_config

    config = resolve_config(log_dir=log_dir)
    if keystore_kind(config) == "kafka" and config.bootstrap_servers:
        return keystore_for(config)
    location = config.log_dir / LOCATION_FILE
    if location.is_file() and os.environ.get(KEYSTORE_ENV, "").strip().lower() != "file":
        import json

        from secureml.audit.privacy.kafka_keys import KafkaKeyStore

        noted = json.loads(location.read_text(encoding="utf-8"))
        return KafkaKeyStore(noted["bootstrap_servers"], noted["topic"], config.librdkafka_settings())
    directory = keystore_dir()
    if not directory.is_dir():
        return None
    return FileKeyStore(directory)


def stored_identities(names: tuple[str, ...], log_dir: Path | None = None) -> frozenset[str]:
    """Identifiers as configured (a rule's allowed users, ...) and as stored: with their pseudonyms, so a
    setting written with clear ids matches pseudonymised events."""
    key = (names, str(log_dir), os.environ.get(KEYSTORE_ENV), os.environ.get(KEYSTORE_DIR_ENV))
    found = _identities.get(key)
    if found is None:
        store = None
        if names:
            store = keystore_for(_consumer_config) if _consumer_config is not None else reader_keystore(log_dir)
        forms = set(names)
        if store is not None:
            from secureml.audit.privacy.keys import pseudonym

            secret = store.pseudonym_key()
            forms.update(pseudonym(secret, name) for name in names)
        found = _identities[key] = frozenset(forms)
    return found


_identities: dict[tuple[Any, ...], frozenset[str]] = {}
_consumer_config: AuditConfig | None = None


def use_keys_of(config: AuditConfig) -> None:
    """A stream consumer (the alerter) of ``config``'s events: identifiers in its settings are matched through
    the key store of that configuration (the Kafka key topic, or the embedded store)."""
    global _consumer_config
    _consumer_config = config
    _identities.clear()

__all__ = ["KEYSTORE_DIR_ENV", "KEYSTORE_ENV", "PrivacyPolicy", "keystore_for", "protector_for", "reader_keystore",
           "resolve_policy", "stored_identities", "use_keys_of"]
