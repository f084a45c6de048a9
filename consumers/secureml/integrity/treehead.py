"""C2SP tlog-checkpoint notes (c2sp.org/tlog-checkpoint): a log's origin, tree size and root hash, signed.

The note text is exactly ``<origin>\\n<tree size in decimal>\\n<base64 root>\\n`` (this log
writes no extension lines; it reads them). The log signs it with an Ed25519 note signature
(type 0x01) whose key name is the origin, so the log's vkey is ``<origin>+<key ID>+<key>``.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from secureml.integrity.exceptions import NoteError
from secureml.integrity.notes import NoteKey, SignedNote, note_signature, parse_note, valid_name, verified_by

_SIZE = re.compile(r"0|[1-9][0-9]*")


@dataclass(frozen=True)
class TreeHead:
    """A checkpoint's content: origin, tree size, root hash, and any extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        """The note text, byte-exact with the specification."""
        return "".join(f"{line}\n" for line in (self.origin, str(self.size),
                                                base64.b64encode(self.root).decode(), *self.extensions))

    @classmethod
    def parse(cls, text: str, where: str = "checkpoint") -> TreeHead:
        """The tree head of a note text; NoteError naming the line that breaks the format."""
        if not text.endswith("\n"):
            raise NoteError(f"{where}: the checkpoint text must end in a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise NoteError(f"{where}: a checkpoint has at least 3 lines (origin, tree size, root hash)")
        origin, size, root, *extensions = lines
        if not origin:
            raise NoteError(f"{where}: the origin line is empty")
        if not _SIZE.fullmatch(size) or int(size) >= 1 << 63:
            raise NoteError(f"{where}: the tree size line {size[:40]!r} is not a decimal without leading zeroes")
        try:
            digest = base64.b64decode(root, validate=True)
        except binascii.Error:
            digest = b""
        if len(digest) != 32 or base64.b64encode(digest).decode() != root:
            raise NoteError(f"{where}: the root hash line {root[:60]!r} is not the base64 of 32 bytes")
        if any(not line for line in extensions):
            raise NoteError(f"{where}: extension lines must not be empty")
        return cls(origin, int(size), digest, tuple(extensions))


def log_key(origin: str, public_key: Ed25519PublicKey) -> NoteKey:
    """The note key of a log: its origin as the key name."""
    if not valid_name(origin):
        raise NoteError(f"log origin {origin!r}: must be non-empty, without spaces or '+' (it names the log's key)")
    return NoteKey(origin, public_key)


def sign_tree_head(head: TreeHead, key: Ed25519PrivateKey) -> SignedNote:
    """The checkpoint note of a tree head, signed by the log."""
    text = head.text()
    return SignedNote(text, (note_signature(text, head.origin, key),))


def open_checkpoint(
    encoded: str | bytes, keys: list[NoteKey], where: str = "checkpoint"
) -> tuple[TreeHead, SignedNote]:
    """A checkpoint note checked against the log keys trusted for it: at least one must have signed it."""
    note = parse_note(encoded, where)
    head = TreeHead.parse(note.text, where)
    signed = [key for key in keys if key.name == head.origin and verified_by(note, key) is not None]
    if not signed:
        raise NoteError(f"{where}: no trusted key of log {head.origin!r} signed this checkpoint")
    return head, note
