"""The reading side of the privacy layer: pseudonyms back to ids, ciphertexts back to values, or ``<erased>``.

Every reader shares it (get_audit_logs, connect, the query CLI, exports, the web UI): with
access to the key store a value reads as it was logged; once its subject was erased it reads
as ``<erased>`` and the identifier as its pseudonym. Without the key store, values stay as stored.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
from collections.abc import Iterable
from typing import Any

from secureml.audit import accelerator
from secureml.audit.events import EVENT_FIELDS, envelope_fields, fields_of
from secureml.audit.privacy.keys import PSEUDONYM, KeyStore, SubjectKey
from secureml.audit.privacy.protect import ENCRYPTED_PREFIX
from secureml.audit.schema import JSON_FIELDS

ERASED = "<erased>"
_MISSING = object()
MARKS = ("ps_", ENCRYPTED_PREFIX)  # what a stored text to reveal starts with: a pseudonym or a ciphertext
#: The fields a privacy policy may seal, the only ones any reader looks in for pseudonyms and ciphertexts: the user,
#: the JSON fields (``encrypt_keys`` inside them) and every field of an event's payload, which ``encrypt_fields`` may
#: name (``event_type.field``, as in ``data_access.dataset_name``). The envelope's other fields (ids, the operation's
#: name, hashes, hosts) are stored as logged, whatever they hold, and read so.
REVEALABLE_FIELDS = frozenset({"user", *JSON_FIELDS, *(
    name for event_type in EVENT_FIELDS for name in fields_of(event_type) if name not in envelope_fields())})
# The accelerator's batch open of stored ciphertexts (native/src/reveal.rs), or None: the values are the same.
_native_open = None if accelerator.native is None else accelerator.native.open_sealed


class RevealedEvent(dict):  # type: ignore[type-arg]
    """An event dict as the user logged it; ``sealed`` maps each revealed field to (value shown, value
    sealed), so a report can check the events it is given against their hashes (a field changed since
    is checked as changed).

    ``RevealedEvent(...)`` makes one that holds its ``sealed`` itself (set it after). A query's events are of a
    subclass made for the query (``secureml.query.privacy.RevealedRows``), which finds each event's ``sealed``
    by its ``event_id`` among the query's stored values: a revealed event then costs what a dict costs. Copies
    and pickles hold their ``sealed`` themselves.
    """

    # A dict's own layout, no instance ``__dict__``: what lets the native pass give a query's dicts the query's
    # subclass (native/src/rows.rs).
    __slots__ = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> RevealedEvent:
        return super().__new__(HeldEvent if cls is RevealedEvent else cls, *args, **kwargs)

    @property
    def sealed(self) -> dict[str, tuple[Any, Any]]:
        """Each revealed field's (value shown, value sealed), in the order the fields were revealed."""
        raise AttributeError("sealed")  # each subclass keeps its events' sealed forms where it says

    def as_sealed(self) -> dict[str, Any]:
        """The event with each revealed field, unless changed since, as it was sealed."""
        return {**self, **{k: stored for k, (shown, stored) in self.sealed.items() if self.get(k) == shown}}

    def __reduce__(self) -> tuple[Any, ...]:
        return _held, (dict(self), getattr(self, "sealed", None))


class HeldEvent(RevealedEvent):
    """A revealed event holding its ``sealed`` itself: one revealed in Python, made directly, copied or unpickled."""

    __slots__ = ("_sealed",)
    _sealed: dict[str, tuple[Any, Any]] | tuple[Any, ...]

    @property
    def sealed(self) -> dict[str, tuple[Any, Any]]:
        found = self._sealed
        if found.__class__ is tuple:  # pickled by the version before, which kept (field, shown, stored, field, ...)
            found = self._sealed = {found[i]: (found[i + 1], found[i + 2]) for i in range(0, len(found), 3)}
        return found  # type: ignore[return-value]

    @sealed.setter
    def sealed(self, value: dict[str, tuple[Any, Any]]) -> None:
        self._sealed = value


def _held(items: dict[str, Any], sealed: dict[str, tuple[Any, Any]] | None) -> HeldEvent:
    """A copied or unpickled revealed event (``RevealedEvent.__reduce__``)."""
    event = HeldEvent(items)
    if sealed is not None:
        event.sealed = sealed
    return event


class Revealer:
    """Reveals stored values with one key store, each subject's key looked up once."""

    def __init__(self, store: KeyStore) -> None:
        self.store = store
        self._keys: dict[str, SubjectKey | None] = {}

    def key(self, name: str) -> SubjectKey | None:
        found = self._keys.get(name, _MISSING)
        if found is _MISSING:
            found = self._keys[name] = self.store.get(name)
        return found  # type: ignore[return-value]

    def identifier(self, value: Any) -> Any:
        """A pseudonym's subject id while its key exists; anything else as it is."""
        if isinstance(value, str) and value.startswith("ps_") and PSEUDONYM.match(value):
            key = self.key(value)
            return value if key is None else key.subject
        return value

    def value(self, text: str) -> Any:
        """The value an ``enc:v1:`` text holds, or ``<erased>`` when its key is gone or does not open it."""
        from cryptography.exceptions import InvalidTag

        name, _, payload = text[len(ENCRYPTED_PREFIX):].partition(":")
        key = self.key(name) if PSEUDONYM.match(name) else None
        if key is None:
            return ERASED
        try:
            raw = base64.b64decode(payload)
            return json.loads(key.aead.decrypt(raw[:12], raw[12:], name.encode()))
        except (InvalidTag, binascii.Error, ValueError):
            return ERASED  # a key created after the erasure does not open what the old one sealed

    def key_bytes(self, name: str) -> bytes | None:
        """A pseudonym's key as bytes for the native open, None as ``value`` would find none."""
        key = self.key(name) if PSEUDONYM.match(name) else None
        return None if key is None else key.key

    def texts(self, values: Iterable[str]) -> dict[str, str]:
        """``{value: self.text(value)}`` for stored texts, each distinct one once; with the accelerator the
        ciphertexts are opened in one native call (a Python decrypt, base64 and ``json.loads`` per value
        was most of a real lake's query), which leaves to ``value`` any text it does not simply open.

        The dict of the distinct texts is filled in place (a second dict of 800k ciphertexts, and the set of
        the texts left, cost more than opening them)."""
        shown: dict[str, Any] = dict.fromkeys(values)
        sealed = [v for v in shown if v.startswith(ENCRYPTED_PREFIX)] if _native_open is not None else []
        if sealed:
            shown.update(zip(sealed, _native_open(sealed, self.key_bytes)))
        for text in [text for text, opened in shown.items() if opened.__class__ is not str]:  # the few others
            opened = shown[text]
            if opened is None:  # pseudonyms, texts not opened natively, every text without the accelerator
                shown[text] = self.text(text)
                continue
            try:
                revealed = json.loads(opened)
            except ValueError:
                revealed = ERASED
            shown[text] = revealed if isinstance(revealed, str) else json.dumps(revealed)
        return shown

    def text_list(self, values: list[Any]) -> list[Any]:
        """``[self.text(v) for v in values]``, the texts revealed together (``texts``)."""
        shown = self.texts(v for v in values if isinstance(v, str))
        return [shown[v] if isinstance(v, str) else self.text(v) for v in values]

    def text(self, value: Any) -> Any:
        """A stored text field as logged."""
        if isinstance(value, str) and value.startswith(ENCRYPTED_PREFIX):
            revealed = self.value(value)
            return revealed if isinstance(revealed, str) else json.dumps(revealed)
        return self.identifier(value)

    def json_text(self, text: Any) -> Any:
        """Stored JSON text with its encrypted values revealed (still JSON text)."""
        if not isinstance(text, str) or (ENCRYPTED_PREFIX not in text and "ps_" not in text):
            return text
        return json.dumps(self.walk(json.loads(text)), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def walk(self, value: Any) -> Any:
        """A parsed JSON value with its encrypted values (at any depth) revealed."""
        if isinstance(value, str):
            if value.startswith(ENCRYPTED_PREFIX):
                return self.value(value)
            return self.identifier(value)
        if isinstance(value, dict):
            return {k: self.walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.walk(v) for v in value]
        return value


def needs_reveal(value: Any) -> bool:
    """True when a stored value (text or parsed JSON) may hold a pseudonym or a ciphertext."""
    if isinstance(value, str):
        return value.startswith(("ps_", ENCRYPTED_PREFIX))
    if isinstance(value, dict):
        return any(needs_reveal(v) for v in value.values())
    if isinstance(value, list):
        return any(needs_reveal(v) for v in value)
    return False


def reveal_logs(revealer: Revealer, logs: list[dict[str, Any]], fields: tuple[str, ...] | None = None
                ) -> list[dict[str, Any]]:
    """Event dicts (parsed JSON fields) as logged; a dict holding nothing to reveal is kept as it is.

    ``fields`` limits the look to those fields (the ones that hold anything to reveal; by default, those a policy may
    seal: ``REVEALABLE_FIELDS``). The stored texts of all the events are revealed first, each distinct one once (ids
    repeat; ciphertexts are opened in one batch); a revealed text needs no copy for ``sealed`` (a str), a revealed
    JSON value does.
    """
    found: list[list[tuple[str, Any]] | None] = []  # per event, the fields to reveal and their stored values
    texts = []
    for log in logs:
        changed = None
        for key in ([key for key in log if key in REVEALABLE_FIELDS] if fields is None else fields):
            value = log.get(key)
            if isinstance(value, str):
                if not value.startswith(MARKS):
                    continue
                texts.append(value)
            elif value is None or not needs_reveal(value):
                continue
            if changed is None:
                changed = []
            changed.append((key, value))
        found.append(changed)
    shown = revealer.texts(texts)
    out: list[dict[str, Any]] = []
    for log, changed in zip(logs, found):
        if changed is None:
            out.append(log)
            continue
        revealed = RevealedEvent(log)
        sealed = {}
        for key, value in changed:
            if isinstance(value, str):
                revealed[key] = text = shown[value]
                sealed[key] = (text, value)
            else:
                revealed[key] = walked = revealer.walk(value)
                sealed[key] = (copy.deepcopy(walked), value)
        revealed.sealed = sealed
        out.append(revealed)
    return out


def reveal_log(revealer: Revealer, log: dict[str, Any], fields: tuple[str, ...] | None = None) -> dict[str, Any]:
    """One event dict as logged (``reveal_logs``)."""
    return reveal_logs(revealer, [log], fields)[0]
