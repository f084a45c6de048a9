"""Keys of the privacy layer: pseudonyms, per-subject AEAD keys, and the stores that hold them wrapped.

A KeyStore holds, wrapped under a key-encryption key (KEK), one pseudonym key per deployment
and one 256-bit key per data subject (with the subject's id, so a reader with the store can
show who a pseudonym stands for). Destroying a subject's key is the erasure: every value
encrypted under it becomes unreadable everywhere at once, while the events, their hashes and
proofs stay as they were (crypto-shredding).

``cryptography`` is imported on first use, never when the producer is imported.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import itertools
import json
import os
import re
import threading
from pathlib import Path
from typing import Any, Protocol

from secureml.audit import _fs
from secureml.audit.exceptions import AuditConfigError

KEYSTORE_DIR_ENV = "SECUREML_AUDIT_KEYSTORE_DIR"
KEK_ENV = "SECUREML_AUDIT_KEK"
KEK_FILE_ENV = "SECUREML_AUDIT_KEK_FILE"
DEFAULT_KEYSTORE_DIR = Path("~/.config/secureml-audit/keystore")
PSEUDONYM_PREFIX = "ps_"
PSEUDONYM = re.compile(r"^ps_[a-z2-7]{24}$")
PSEUDONYM_KEY_NAME = "pseudonym-key"
_WRAP_VERSION = b"\x01"


def _aesgcm(key: bytes) -> Any:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # first use only: not at import

    return AESGCM(key)


def pseudonym(pseudonym_key: bytes, identifier: str) -> str:
    """The stable keyed pseudonym of an identifier: ``ps_`` + 24 base32 characters of HMAC-SHA-256 (120 bits)."""
    digest = hmac.new(pseudonym_key, identifier.encode(), hashlib.sha256).digest()
    return PSEUDONYM_PREFIX + base64.b32encode(digest[:15]).decode().lower()


def is_pseudonym(value: object) -> bool:
    """True for a stored pseudonym (``ps_`` + 24 base32 characters)."""
    return isinstance(value, str) and PSEUDONYM.match(value) is not None


class SubjectKey:
    """A data subject's key (with the AEAD object built once) and the subject's id.

    ``nonce()`` gives 96-bit AES-GCM nonces that never repeat under the key: 64 random bits drawn
    when the key is loaded (fresh in every process) and a 32-bit counter (a new random part
    before it wraps); cheaper than 12 bytes from the OS per event.
    """

    __slots__ = ("key", "subject", "aead", "_base", "_counter", "_lock")

    def __init__(self, key: bytes, subject: str) -> None:
        self.key = key
        self.subject = subject
        self.aead = _aesgcm(key)
        self._lock = threading.Lock()
        self._base = int.from_bytes(os.urandom(8), "big") << 32  # the random part, counter bits zero
        self._counter = itertools.count()

    def nonce(self) -> bytes:
        n = next(self._counter)  # atomic under the GIL
        if n >= 0xFFFFFFFF:
            with self._lock:
                if next(self._counter) >= 0xFFFFFFFF:
                    self._base, self._counter = int.from_bytes(os.urandom(8), "big") << 32, itertools.count(1)
                return self._base.to_bytes(12, "big")
        return (self._base | n).to_bytes(12, "big")


class KeyStore(Protocol):
    """Where wrapped keys live. ``name`` is a subject's pseudonym (the key id in ciphertexts)."""

    def pseudonym_key(self) -> bytes:
        """The deployment's pseudonym key, created on first use."""

    def get_or_create(self, name: str, subject: str) -> SubjectKey:
        """The subject's key, created (once, whoever asks first wins) when it has none."""

    def get(self, name: str) -> SubjectKey | None:
        """The subject's key, or None when there is none (never created, or erased)."""

    def destroy(self, name: str) -> bool:
        """Erase the subject's key; True when there was one."""


class Wrapper:
    """AES-256-GCM under the key-encryption key, with the record's name as associated data."""

    def __init__(self, kek: bytes) -> None:
        self._aead = _aesgcm(kek)

    def wrap(self, name: str, payload: bytes) -> bytes:
        nonce = os.urandom(12)
        return _WRAP_VERSION + nonce + self._aead.encrypt(nonce, payload, name.encode())

    def unwrap(self, name: str, blob: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag

        if blob[:1] != _WRAP_VERSION or len(blob) < 29:
            raise AuditConfigError(f"the wrapped key {name!r} is not in a known format (corrupt key store?)")
        try:
            return self._aead.decrypt(blob[1:13], blob[13:], name.encode())
        except InvalidTag:
            raise AuditConfigError(
                f"the wrapped key {name!r} does not open under this key-encryption key: set {KEK_ENV} (or "
                f"{KEK_FILE_ENV}) to the KEK the key store was created with") from None

    def wrap_subject(self, name: str, key: bytes, subject: str) -> bytes:
        payload = json.dumps({"key": base64.b64encode(key).decode(), "subject": subject}).encode()
        return self.wrap(name, payload)

    def unwrap_subject(self, name: str, blob: bytes) -> SubjectKey:
        record = json.loads(self.unwrap(name, blob))
        return SubjectKey(base64.b64decode(record["key"]), record["subject"])


def keystore_dir() -> Path:
    """The embedded key store's folder: ``SECUREML_AUDIT_KEYSTORE_DIR``, else ``~/.config/secureml-audit/keystore``."""
    raw = os.environ.get(KEYSTORE_DIR_ENV)
    return (Path(raw) if raw else DEFAULT_KEYSTORE_DIR).expanduser().absolute()


def _decode_kek(text: str, origin: str) -> bytes:
    text = text.strip()
    for decode in (bytes.fromhex, base64.b64decode, base64.urlsafe_b64decode):
        try:
            key = decode(text)
        except (ValueError, binascii.Error):
            continue
        if len(key) == 32:
            return key
    raise AuditConfigError(f"{origin} must hold a 256-bit key as 64 hex digits or base64 (e.g. "
                           f"python -c 'import os,base64;print(base64.b64encode(os.urandom(32)).decode())')")


def load_kek(directory: Path) -> bytes:
    """The key-encryption key: ``SECUREML_AUDIT_KEK``, else the file ``SECUREML_AUDIT_KEK_FILE``, else
    ``<key store>/kek``, generated (owner-only) on first use so that an installation works at once."""
    if raw := os.environ.get(KEK_ENV):
        return _decode_kek(raw, KEK_ENV)
    path = Path(os.environ.get(KEK_FILE_ENV) or directory / "kek").expanduser()
    if not path.exists() and not os.environ.get(KEK_FILE_ENV):
        _fs.make_private_dir(path.parent, link_ok=True)
        try:
            _fs.write_atomically(path, base64.b64encode(os.urandom(32)) + b"\n", replace=False)
            import logging  # only here: a model server need not load logging at import

            logging.getLogger(__name__).info(
                "created a key-encryption key at %s (owner-only); back it up, or set %s", path, KEK_ENV)
        except FileExistsError:
            pass  # another process created it first: use theirs
    try:
        return _decode_kek(path.read_text(encoding="ascii"), f"the key-encryption key file {path}")
    except OSError as exc:
        raise AuditConfigError(f"cannot read the key-encryption key file {path}: {exc.strerror or exc}; set "
                               f"{KEK_FILE_ENV} or {KEK_ENV}") from None


def refuse_inside(directory: Path, log_dir: Path | None) -> None:
    """Keys must never sit beside what they protect: refuse a key store inside ``log_dir`` (resolved paths)."""
    if log_dir is None:
        return
    store, logs = directory.resolve(), Path(log_dir).resolve()
    if store == logs or logs in store.parents:
        raise AuditConfigError(
            f"the key store {store} is inside the log directory {logs}: erasing a subject must leave no key "
            f"beside the events; set {KEYSTORE_DIR_ENV} to a folder outside it")


class FileKeyStore:
    """The embedded default: one wrapped key per file, outside ``log_dir``, owner-only.

    ``<dir>/pseudonym-key`` and ``<dir>/subjects/<pseudonym>``; a new key is linked into place
    (first writer wins, so concurrent processes agree); erasure overwrites and unlinks the file.
    """

    def __init__(self, directory: Path | None = None, *, log_dir: Path | None = None) -> None:
        self.directory = (directory or keystore_dir()).expanduser().absolute()
        refuse_inside(self.directory, log_dir)
        self._wrapper: Wrapper | None = None

    def _wrap(self) -> Wrapper:
        if self._wrapper is None:
            _fs.make_private_dir(self.directory, link_ok=True)
            self._wrapper = Wrapper(load_kek(self.directory))
        return self._wrapper

    def _path(self, name: str) -> Path:
        if not PSEUDONYM.match(name):
            raise AuditConfigError(f"not a subject pseudonym: {name!r:.40}")
        return self.directory / "subjects" / name

    def pseudonym_key(self) -> bytes:
        wrapper = self._wrap()
        path = self.directory / PSEUDONYM_KEY_NAME
        if not path.exists():
            with contextlib.suppress(FileExistsError):
                _fs.write_atomically(path, wrapper.wrap(PSEUDONYM_KEY_NAME, os.urandom(32)), replace=False)
        return wrapper.unwrap(PSEUDONYM_KEY_NAME, path.read_bytes())

    def get(self, name: str) -> SubjectKey | None:
        path = self._path(name)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        return self._wrap().unwrap_subject(name, blob)

    def get_or_create(self, name: str, subject: str) -> SubjectKey:
        found = self.get(name)
        if found is not None:
            return found
        path = self._path(name)
        _fs.make_private_dir(path.parent)
        # Created meanwhile by another process: theirs is the key.
        with contextlib.suppress(FileExistsError):
            _fs.write_atomically(path, self._wrap().wrap_subject(name, os.urandom(32), subject), replace=False)
        found = self.get(name)
        assert found is not None  # just written
        return found

    def destroy(self, name: str) -> bool:
        path = self._path(name)
        try:
            fd = _fs.open_private(path, os.O_WRONLY)
        except FileNotFoundError:
            return False
        try:  # overwrite first: the key must not linger in the freed blocks
            size = os.fstat(fd).st_size
            os.write(fd, b"\x00" * size)
            os.fsync(fd)
        finally:
            os.close(fd)
        path.unlink()
        _fs.fsync_dir(path.parent)
        return True
