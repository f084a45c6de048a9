"""The producer's privacy step, between validation and sealing: pseudonymise, encrypt, redact.

Runs on every event, so it is built for the hot path: pseudonyms and subject keys (with their
AEAD objects) are cached per identifier, so once a subject is known no event touches the key
store; text without an '@' or a digit skips the detectors.

Sealing uses the optional native accelerator (``secureml.audit.accelerator``) when it is there; it
writes the same stored form as the pure-Python path here, which is used otherwise.
"""

from __future__ import annotations

import json
import os
import re
import threading
from binascii import b2a_base64
from collections.abc import Callable
from types import ModuleType
from typing import Any

from secureml.audit import accelerator
from secureml.audit.privacy.detectors import CANDIDATE as _CANDIDATE
from secureml.audit.privacy.detectors import redact
from secureml.audit.privacy.keys import KeyStore, SubjectKey, pseudonym
from secureml.audit.privacy.policy import DICT_FIELDS, PrivacyPolicy

ENCRYPTED_PREFIX = "enc:v1:"
_dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
_json_string: Callable[[str], str] = json.encoder.encode_basestring  # type: ignore[attr-defined]
# The module sealer() seals with, or None for the pure-Python path (the bench sets it to compare the two).
native: ModuleType | None = accelerator.native
# An event type's privacy step: (values, changed in place; user; subject) -> the user to store.
Step = Callable[[dict[str, Any], str | None, str | None], str | None]
# A subject's pseudonym, its sealer, and the native sealer's in-place form (values, field) or None.
Subject = tuple[str, Callable[[Any], str], Callable[[dict[str, Any], str], None] | None]


def encrypt(key: SubjectKey, name: str, value: Any) -> str:
    """``enc:v1:<subject pseudonym>:<base64 of nonce + AES-GCM ciphertext of the value's JSON>``."""
    return sealer(key, name)(value)


def sealer(key: SubjectKey, name: str) -> Callable[[Any], str]:
    """``encrypt`` for one subject, with what is the same for every value (AEAD, associated data, the text's
    head) bound once: the hot path calls it per encrypted value."""
    aad = name.encode()
    head = f"{ENCRYPTED_PREFIX}{name}:"
    if native is not None:
        # Its nonces come from its own random 64-bit part and counter, as two processes' do for one key.
        return native.Sealer(key.key, head, aad, _dumps).seal  # type: ignore[no-any-return]
    aead_encrypt = key.aead.encrypt
    nonce = key.nonce

    def seal(value: Any) -> str:
        iv = nonce()
        plain = _json_string(value) if type(value) is str else _dumps(value)
        return head + b2a_base64(iv + aead_encrypt(iv, plain.encode(), aad), newline=False).decode("ascii")

    return seal


class Protector:
    """Applies a PrivacyPolicy to the values of an event; one per trail, sharing a process-wide key cache."""

    def __init__(self, policy: PrivacyPolicy, store: Callable[[], KeyStore]) -> None:
        self.policy = policy
        self._store_factory = store
        self._store: KeyStore | None = None
        self._lock = threading.Lock()
        self._pseudonym_key: bytes | None = None
        self._sealers: dict[str, Callable[[Any], str]] = {}  # pseudonym -> encrypt under its key
        self._subjects: dict[str, Subject] = {}  # identifier -> (pseudonym, sealer, in-place sealer)
        self._pseudonymise_user = "user" in policy.pseudonymise
        self._pseudonymise_subject = "user_id" in policy.pseudonymise
        self._encrypt_any = tuple(f.partition(".")[2] for f in policy.encrypt_fields if f.startswith("*."))
        self._encrypt: dict[str, tuple[str, ...]] = {}
        for item in policy.encrypt_fields:
            event_type, _, name = item.partition(".")
            if event_type != "*":
                self._encrypt[event_type] = (*self._encrypt.get(event_type, ()), name)
        self._keys_lower = frozenset(k.lower() for k in policy.encrypt_keys)
        # A JSON text that names none of the keys (as "key") needs no parsing to find them.
        self._key_pattern = re.compile("|".join(re.escape(json.dumps(k)) for k in sorted(self._keys_lower)),
                                       re.IGNORECASE) if self._keys_lower else None
        self._redact = frozenset(policy.redact_fields)
        self.steps: dict[str, Step] = {}  # event type -> its step (see ``step``)
        os.register_at_fork(after_in_child=self._reload_keys)

    def _reload_keys(self) -> None:
        """In a forked child: drop the parent's sealers, whose nonce counters (random part and count) the child
        inherited, so that its first event per subject loads the key again with a fresh random part; else child
        and parent would seal under one key with the same nonces."""
        self._lock = threading.Lock()  # another thread of the parent may have held it at the fork
        self._store = None  # a new one: a Kafka key store's clients do not survive a fork
        self._subjects.clear()
        self._sealers.clear()

    def _keystore(self) -> KeyStore:
        if self._store is None:
            self._store = self._store_factory()
        return self._store

    def name_of(self, identifier: str) -> str:
        """The pseudonym of an identifier, registering the identifier's key on first sight (so readers can
        show who it stands for until it is erased)."""
        return (self._subjects.get(identifier) or self._subject(identifier))[0]

    def _subject(self, identifier: str) -> Subject:
        """(pseudonym, sealer under its key, its in-place form or None) of an identifier, its key fetched or created
        on first sight."""
        found = self._subjects.get(identifier)
        if found is None:
            with self._lock:
                found = self._subjects.get(identifier)  # another thread may have loaded it meanwhile
                if found is None:
                    if self._pseudonym_key is None:
                        self._pseudonym_key = self._keystore().pseudonym_key()
                    name = pseudonym(self._pseudonym_key, identifier)
                    seal = self._sealers[name] = sealer(self._keystore().get_or_create(name, identifier), name)
                    native_sealer = getattr(seal, "__self__", None)  # the native Sealer also seals a field in place
                    in_place = None if native_sealer is None else native_sealer.seal_field
                    found = self._subjects[identifier] = (name, seal, in_place)
        return found

    def forget(self, identifier: str, name: str) -> None:
        """Drop an erased subject's cached key (its next event gets a new key)."""
        with self._lock:
            self._subjects.pop(identifier, None)
            self._sealers.pop(name, None)

    def protect(self, event_type: str, values: dict[str, Any], user: str | None,
                subject: str | None) -> tuple[dict[str, Any], str | None]:
        """The values and user of an event as they are to be stored (``values``, the call's own dict, is changed
        in place). The trail calls ``steps``/``step`` itself, saving this call's frame on the hot path."""
        user = (self.steps.get(event_type) or self.step(event_type, tuple(values)))(values, user, subject)
        return values, user

    def _fields(self, event_type: str, fields: tuple[str, ...]) -> tuple[list[str], list[tuple[str, bool]], list[str]]:
        """What the policy does to the fields of an event type: those encrypted, the JSON fields it walks (and
        whether it redacts their strings), the texts it redacts."""
        encrypted = [f for f in (*self._encrypt.get(event_type, ()), *self._encrypt_any) if f in fields]
        keyed = self._key_pattern is not None
        # A JSON field the policy neither redacts nor can find a named key in is left alone.
        dicts = [(f, f in self._redact) for f in fields
                 if f in DICT_FIELDS and f not in encrypted and (keyed or f in self._redact)]
        texts = [f for f in fields if f in self._redact and f not in DICT_FIELDS and f not in encrypted]
        return encrypted, dicts, texts

    def native_plan(self, event_type: str, fields: tuple[str, ...]) -> tuple[Any, ...] | None:
        """The step of an event type as the accelerator's ``EventChain`` does it: (the subjects' cache, the loader
        of a subject, whether the user is pseudonymised, the fields encrypted), or None when the policy does more
        to it than pseudonymising and encrypting (redacts a text, or may redact a JSON value's strings). A JSON
        field walked only for named keys is left out: the native path encodes no JSON object or array."""
        encrypted, dicts, texts = self._fields(event_type, fields)
        if texts or any(redacting for _field, redacting in dicts):
            return None
        return self._subjects, self._subject, self._pseudonymise_user, encrypted

    def step(self, event_type: str, fields: tuple[str, ...]) -> Step:
        """Per event type, what the policy does to its values, as one function ``(values, user, subject) -> the
        user to store``: the subject's pseudonym and sealer, the fields to encrypt, the JSON fields to walk (and
        whether to redact their strings), the texts to redact. Generated once as straight-line code (from the
        event's field names only), so the hot path neither looks the policy up nor loops over fields."""
        encrypted, dicts, texts = self._fields(event_type, fields)
        default_subject = "values.get('user_id')" if event_type == "user_request" else "user"
        lines = [
            "def step(values, user, subject):",
            f"    if subject is None: subject = {default_subject}",
            # Every subject's key is registered on first sight, whether or not this type encrypts a value.
            "    found = None if subject is None else (subjects.get(subject) or load(subject))",
        ]
        if self._pseudonymise_user:
            # Mostly the user is the subject (no subject= given): then its pseudonym is already at hand.
            lines.append("    if user is not None: user = found[0] if user is subject "
                         "else (subjects.get(user) or load(user))[0]")
        if self._pseudonymise_subject and "user_id" in fields:
            lines += ["    identifier = values.get('user_id')",
                      "    if identifier is not None: values['user_id'] = "
                      "(subjects.get(identifier) or load(identifier))[0]"]
        if encrypted:
            # The native sealer does a field's get, checks, seal and store in one call; the pure-Python one here.
            lines += ["    if found is not None:", "        seal_field = found[2]",
                      "        if seal_field is not None:"]
            lines += [f"            seal_field(values, {field!r})" for field in encrypted]
            lines += ["        else:", "            seal = found[1]"]
            for field in encrypted:
                lines += [f"            value = values.get({field!r})",
                          "            if isinstance(value, str) and not value.startswith(PREFIX): "
                          f"values[{field!r}] = seal(value)"]
        if dicts:
            lines.append("    name = None if found is None else found[0]")
        for field, redacting in dicts:
            # Only a JSON object or array can hold a named key: a string or number needs no look.
            test = "value is not None" if redacting else "value is not None and value[:1] in '{['"
            lines += [f"    value = values.get({field!r})",
                      f"    if {test}: values[{field!r}] = json_text(value, name, {redacting})"]
        for field in texts:
            lines += [f"    value = values.get({field!r})",
                      f"    if value is not None: values[{field!r}] = redact(value)"]
        lines.append("    return user")
        scope: dict[str, Any] = {"subjects": self._subjects, "load": self._subject, "json_text": self.json_text,
                                 "redact": redact, "PREFIX": ENCRYPTED_PREFIX}
        exec("\n".join(lines), scope)  # noqa: S102 - generated from the event's field names only
        step: Step = scope["step"]
        self.steps[event_type] = step
        return step

    def json_text(self, text: str, name: str | None, redacting: bool) -> str:
        """JSON text with named keys' values encrypted (when there is a subject) and strings redacted."""
        keyed = (name is not None and self._key_pattern is not None and text[:1] in "{["
                 and self._key_pattern.search(text) is not None)
        if not keyed and not (redacting and _CANDIDATE.search(text) is not None):
            return text
        return _dumps(self._walk(json.loads(text), name, redacting))

    def _walk(self, value: Any, name: str | None, redacting: bool) -> Any:
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                if name is not None and key.lower() in self._keys_lower and item is not None:
                    out[key] = self._sealers[name](item)
                else:
                    out[key] = self._walk(item, name, redacting)
            return out
        if isinstance(value, list):
            return [self._walk(item, name, redacting) for item in value]
        if isinstance(value, str) and redacting:
            return redact(value)
        return value
