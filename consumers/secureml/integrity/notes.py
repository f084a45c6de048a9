"""C2SP signed notes (c2sp.org/signed-note), Ed25519 note keys, and cosignature/v1 (c2sp.org/tlog-cosignature).

A signed note is a text ending in a newline, a blank line, then signature lines
``— <key name> base64(4-byte key ID || signature)``. A key is named by a *vkey*,
``<name>+<key ID as 8 hex digits>+base64(type byte || 32-byte public key)``, whose key ID is
``SHA-256(name || 0x0A || type || public key)[:4]``: type 0x01 for Ed25519 note signatures
(over the note text), 0x04 for timestamped Ed25519 witness cosignatures, whose signature is an
8-byte big-endian POSIX time followed by the Ed25519 signature of
``"cosignature/v1\\ntime <t>\\n" || note text``. Byte-exact with golang.org/x/mod/sumdb/note and
github.com/transparency-dev/formats/note (tests/data/c2sp_go_vectors.json).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from secureml.integrity.exceptions import NoteError

ED25519 = 0x01
COSIGNATURE_V1 = 0x04
DASH = "\u2014"
MAX_SIGNATURES = 64  # the note spec asks for at least 16
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def valid_name(name: str) -> bool:
    """True for a key name the note spec allows: non-empty, no Unicode space, no '+'."""
    return bool(name) and "+" not in name and not any(c.isspace() for c in name) and not _CONTROL.search(name)


@dataclass(frozen=True)
class NoteKey:
    """A named Ed25519 verifier key of one signature type (0x01 note signer, 0x04 cosigner)."""

    name: str
    public_key: Ed25519PublicKey
    type: int = ED25519

    def __post_init__(self) -> None:
        if not valid_name(self.name):
            raise NoteError(f"NoteKey: name {self.name!r} is not a valid key name (non-empty, no spaces, no '+')")
        if self.type not in (ED25519, COSIGNATURE_V1):
            raise NoteError(f"NoteKey: type 0x{self.type:02x} is neither 0x01 (Ed25519 note) nor 0x04 (cosignature/v1)")

    @property
    def key_id(self) -> bytes:
        """The 4-byte key ID."""
        return hashlib.sha256(self.name.encode() + b"\n" + bytes([self.type]) + _raw(self.public_key)).digest()[:4]

    def vkey(self) -> str:
        """The key as a vkey string."""
        encoded = base64.b64encode(bytes([self.type]) + _raw(self.public_key)).decode()
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    def as_type(self, key_type: int) -> NoteKey:
        """The same public key and name under another signature type."""
        return NoteKey(self.name, self.public_key, key_type)


def parse_vkey(vkey: str, *, expect: int | None = None, where: str = "vkey") -> NoteKey:
    """A vkey string parsed and its key ID checked; ``expect`` demands one signature type."""
    parts = vkey.strip().split("+", 2)
    if len(parts) != 3:
        raise NoteError(f"{where}: {vkey!r} is not a vkey: expected <name>+<8 hex digits>+<base64 key>")
    name, hash_hex, encoded = parts
    try:
        raw = base64.b64decode(encoded, validate=True)
        claimed = bytes.fromhex(hash_hex)
    except (binascii.Error, ValueError):
        raise NoteError(f"{where}: {vkey!r} is not a vkey: its key ID or key is not hex/base64") from None
    if len(hash_hex) != 8 or len(raw) != 33 or raw[0] not in (ED25519, COSIGNATURE_V1):
        raise NoteError(f"{where}: {vkey!r} is not an Ed25519 (type 0x01) or cosignature/v1 (type 0x04) vkey")
    if expect is not None and raw[0] != expect:
        raise NoteError(f"{where}: {vkey!r} has signature type 0x{raw[0]:02x}, expected 0x{expect:02x}"
                        + (" (a witness's cosignature/v1 key)" if expect == COSIGNATURE_V1 else " (a log's note key)"))
    if not valid_name(name):
        raise NoteError(f"{where}: {vkey!r} has an invalid key name")
    key = NoteKey(name, Ed25519PublicKey.from_public_bytes(raw[1:]), raw[0])
    if key.key_id != claimed:
        raise NoteError(f"{where}: {vkey!r}: the key ID {hash_hex} does not match its name and key "
                        f"({key.key_id.hex()})")
    return key


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key name, key ID, and the signature bytes after the ID."""

    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        """The signature line, newline included."""
        return f"{DASH} {self.name} {base64.b64encode(self.key_id + self.signature).decode()}\n"


@dataclass(frozen=True)
class SignedNote:
    """A note's text (ending in a newline) and its signatures, in order."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def encode(self) -> str:
        """The note as text: text, blank line, signature lines."""
        return self.text + "\n" + "".join(s.line() for s in self.signatures)

    def with_signatures(self, signatures: list[NoteSignature] | tuple[NoteSignature, ...]) -> SignedNote:
        """The note with more signatures appended, duplicates dropped."""
        merged = list(self.signatures)
        merged += [s for s in signatures if s not in merged]
        return SignedNote(self.text, tuple(merged))

    def by(self, key: NoteKey) -> list[NoteSignature]:
        """The signatures whose name and key ID are the key's (the only ones that may be checked against it)."""
        return [s for s in self.signatures if s.name == key.name and s.key_id == key.key_id]


def check_text(text: str, where: str = "note") -> None:
    """Raise NoteError unless ``text`` is a valid note text."""
    if not text.endswith("\n"):
        raise NoteError(f"{where}: the note text must end in a newline")
    if _CONTROL.search(text):
        raise NoteError(f"{where}: the note text holds a control character other than newline")


def parse_signature_lines(lines: str, where: str = "note") -> list[NoteSignature]:
    """Signature lines (each ``— name base64``, newline-terminated)."""
    signatures: list[NoteSignature] = []
    if lines and not lines.endswith("\n"):
        raise NoteError(f"{where}: the last signature line does not end in a newline")
    for line in lines.splitlines():
        prefix, _, rest = line.partition(" ")
        name, _, encoded = rest.partition(" ")
        if prefix != DASH or not valid_name(name) or " " in encoded:
            raise NoteError(f"{where}: {line[:80]!r} is not a signature line ('{DASH} <key name> <base64>')")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise NoteError(f"{where}: the signature of {name!r} is not base64") from None
        if len(raw) < 5:
            raise NoteError(f"{where}: the signature of {name!r} is too short")
        signatures.append(NoteSignature(name, raw[:4], raw[4:]))
    if len(signatures) > MAX_SIGNATURES:
        raise NoteError(f"{where}: more than {MAX_SIGNATURES} signatures")
    return signatures


def parse_note(encoded: str | bytes, where: str = "note") -> SignedNote:
    """A signed note parsed (signatures unchecked); the text ends at the last blank line."""
    if isinstance(encoded, bytes):
        try:
            encoded = encoded.decode("utf-8")
        except UnicodeDecodeError:
            raise NoteError(f"{where}: a signed note must be UTF-8") from None
    split = encoded.rfind("\n\n")
    if split < 0:
        raise NoteError(f"{where}: no blank line separates the note text from its signatures")
    text, lines = encoded[: split + 1], encoded[split + 2 :]
    check_text(text, where)
    signatures = parse_signature_lines(lines, where)
    if not signatures:
        raise NoteError(f"{where}: the note has no signature")
    return SignedNote(text, tuple(signatures))


def _verified(public_key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        public_key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def note_signature(text: str, name: str, key: Ed25519PrivateKey) -> NoteSignature:
    """An Ed25519 (type 0x01) note signature of ``text`` by a key named ``name``."""
    check_text(text)
    return NoteSignature(name, NoteKey(name, key.public_key()).key_id, key.sign(text.encode()))


def cosignature_message(text: str, timestamp: int) -> bytes:
    """What a cosignature/v1 signs."""
    return f"cosignature/v1\ntime {timestamp}\n".encode() + text.encode()


def cosignature(text: str, name: str, key: Ed25519PrivateKey, timestamp: int) -> NoteSignature:
    """A timestamped Ed25519 cosignature/v1 (type 0x04) of a checkpoint's note text."""
    check_text(text)
    if not 0 <= timestamp < 1 << 63:
        raise NoteError(f"cosignature: timestamp {timestamp} is outside 0..2^63-1")
    return NoteSignature(name, NoteKey(name, key.public_key(), COSIGNATURE_V1).key_id,
                         struct.pack(">Q", timestamp) + key.sign(cosignature_message(text, timestamp)))


def signature_holds(text: str, signature: NoteSignature, key: NoteKey) -> bool:
    """True when ``signature`` is ``key``'s valid signature of ``text`` (of the key's type)."""
    if signature.name != key.name or signature.key_id != key.key_id:
        return False
    if key.type == ED25519:
        return _verified(key.public_key, signature.signature, text.encode())
    if len(signature.signature) != 8 + 64:
        return False
    (timestamp,) = struct.unpack(">Q", signature.signature[:8])
    return timestamp < 1 << 63 and _verified(key.public_key, signature.signature[8:],
                                             cosignature_message(text, timestamp))


def cosignature_time(signature: NoteSignature) -> int:
    """The POSIX time a cosignature/v1 carries."""
    return int(struct.unpack(">Q", signature.signature[:8])[0])


def verified_by(note: SignedNote, key: NoteKey) -> NoteSignature | None:
    """The key's valid signature of the note; None when it has none. Raises when the key's line is invalid.

    As the note spec asks, a signature that names a known key and fails to verify rejects the note.
    """
    found = None
    for signature in note.by(key):
        if not signature_holds(note.text, signature, key):
            raise NoteError(f"the signature of {key.name} ({key.key_id.hex()}) on the note does not verify: "
                            "the note was altered or forged")
        found = signature
    return found
