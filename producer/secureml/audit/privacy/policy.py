"""The privacy policy: which fields of an event hold personal data, and what is done to them.

Resolution: the ``privacy=`` argument of AuditTrail (a PrivacyPolicy, a dict, a path to a YAML
or JSON file, or ``"off"``), else the file named by ``SECUREML_AUDIT_PRIVACY_POLICY`` (or
``off``), else the defaults below (README, "Privacy by design").
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from secureml.audit.exceptions import AuditValidationError

POLICY_ENV = "SECUREML_AUDIT_PRIVACY_POLICY"

#: Identifiers stored as keyed pseudonyms: the ``user`` of every event, the data subject of a request.
DEFAULT_PSEUDONYMISE = ("user", "user_id")
#: Payload fields encrypted under the data subject's key, as ``event_type.field`` (``*`` for any type).
DEFAULT_ENCRYPT_FIELDS = ("model_inference.input_data",)
#: Keys of dict fields (details, parameters, context, arguments, ...) whose values are encrypted.
DEFAULT_ENCRYPT_KEYS = (
    "email", "e_mail", "name", "full_name", "first_name", "last_name", "surname", "phone", "phone_number",
    "mobile", "address", "street", "postcode", "zip_code", "ssn", "social_security_number", "national_id",
    "passport", "date_of_birth", "dob", "birth_date", "iban", "card_number", "credit_card", "ip_address",
)
#: Text fields scrubbed of detected e-mails, phone numbers, cards, SSNs and IBANs (dict fields: every string value).
DEFAULT_REDACT_FIELDS = (
    "message", "details", "parameters", "metrics", "context", "arguments", "return_value", "status", "purpose",
)
DICT_FIELDS = frozenset({"details", "parameters", "metrics", "privacy_parameters", "context", "arguments",
                         "return_value", "output"})


class PrivacyPolicy(NamedTuple):
    """What is done to personal data before an event is sealed.

    ``pseudonymise``: identifier fields (``user``, ``user_id``) stored as ``ps_...`` pseudonyms.
    ``encrypt_fields``: ``event_type.field`` names whose value is encrypted under the subject's key.
    ``encrypt_keys``: keys (any case) inside dict fields whose values are encrypted.
    ``redact_fields``: fields whose free text is scrubbed of detected personal data
    (``alice@example.com`` -> ``<email>``); leave a field out to keep its text as given.
    ``enabled`` False records everything as given.
    """

    enabled: bool = True
    pseudonymise: tuple[str, ...] = DEFAULT_PSEUDONYMISE
    encrypt_fields: tuple[str, ...] = DEFAULT_ENCRYPT_FIELDS
    encrypt_keys: tuple[str, ...] = DEFAULT_ENCRYPT_KEYS
    redact_fields: tuple[str, ...] = DEFAULT_REDACT_FIELDS

    @classmethod
    def off(cls) -> PrivacyPolicy:
        """Record every value as given (no pseudonyms, no encryption, no redaction)."""
        return cls(enabled=False, pseudonymise=(), encrypt_fields=(), encrypt_keys=(), redact_fields=())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "AuditTrail") -> PrivacyPolicy:
        """A policy from a mapping of the dataclass's fields; missing ones keep their defaults."""
        if not isinstance(data, Mapping):
            raise AuditValidationError("privacy", f"must be a dict of policy settings, got {type(data).__name__}",
                                       where=where)
        names = set(cls._fields)
        unknown = sorted(set(data) - names)
        if unknown:
            raise AuditValidationError(f"privacy.{unknown[0]}", f"is not a policy setting (known: "
                                       f"{', '.join(sorted(names))})", where=where)
        values: dict[str, Any] = {}
        for name, value in data.items():
            if name == "enabled":
                if not isinstance(value, bool):
                    raise AuditValidationError("privacy.enabled", f"must be true or false, got {value!r:.40}",
                                               where=where)
                values[name] = value
                continue
            values[name] = _names(value, f"privacy.{name}", where)
        for item in values.get("pseudonymise", ()):
            if item not in DEFAULT_PSEUDONYMISE:
                raise AuditValidationError("privacy.pseudonymise", f"can hold only {list(DEFAULT_PSEUDONYMISE)}, "
                                           f"got {item!r:.40}", where=where)
        for item in values.get("encrypt_fields", ()):
            event_type, dot, name = item.partition(".")
            if not dot or not event_type or not name:
                raise AuditValidationError("privacy.encrypt_fields", f"entries are 'event_type.field' (or "
                                           f"'*.field'), got {item!r:.60}", where=where)
        return cls(**values)

    @classmethod
    def load(cls, path: str | os.PathLike[str], where: str = "AuditTrail") -> PrivacyPolicy:
        """A policy from a YAML or JSON file."""
        source = Path(path).expanduser()
        try:
            text = source.read_text(encoding="utf-8")
        except OSError as exc:
            raise AuditValidationError("privacy", f"cannot read the policy file {source}: {exc.strerror or exc}",
                                       where=where) from None
        try:
            if source.suffix.lower() == ".json":
                data = json.loads(text)
            else:
                import yaml  # only for a YAML policy: a model server may never need it

                data = yaml.safe_load(text)
        except Exception as exc:  # noqa: BLE001 - yaml and json raise their own error types
            raise AuditValidationError("privacy", f"the policy file {source} is not valid "
                                       f"{'JSON' if source.suffix.lower() == '.json' else 'YAML'}: "
                                       f"{str(exc).splitlines()[0]}", where=where) from None
        if data == "off":
            return cls.off()
        return cls.from_dict(data if data is not None else {}, where)


def _names(value: Any, name: str, where: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise AuditValidationError(name, f"must be a list of names, got {type(value).__name__}", where=where)
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise AuditValidationError(name, f"must hold non-empty strings, got {item!r:.40}", where=where)
    return tuple(value)


def resolve_policy(privacy: Any = None, where: str = "AuditTrail") -> PrivacyPolicy:
    """The policy of a trail: the argument, else ``SECUREML_AUDIT_PRIVACY_POLICY``, else the defaults."""
    if privacy is None:
        privacy = os.environ.get(POLICY_ENV) or None
        if privacy is None:
            return PrivacyPolicy()
    if isinstance(privacy, PrivacyPolicy):
        return privacy
    if isinstance(privacy, str) and privacy.strip().lower() == "off":
        return PrivacyPolicy.off()
    if isinstance(privacy, Mapping):
        return PrivacyPolicy.from_dict(privacy, where)
    if isinstance(privacy, (str, os.PathLike)):
        return PrivacyPolicy.load(privacy, where)
    raise AuditValidationError("privacy", f"must be a PrivacyPolicy, a dict, a path to a YAML/JSON file or 'off', "
                               f"got {type(privacy).__name__}", where=where)
