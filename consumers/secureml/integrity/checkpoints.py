"""Signed checkpoints: the record, its canonical bytes, and its files under ``lake/_checkpoints``.

A checkpoint's signed *body* is canonical JSON (sorted keys, no spaces, ASCII) of::

    {"version": 1, "sequence": n, "created_at": ISO-8601 UTC, "key_id": fingerprint,
     "sources": {source: {"tree_size", "last_offset", "root", "frontier"}},
     "operations_sha256": SHA-256 hex of the canonical JSON of "operations",
     "prev_checkpoint_hash": SHA-256 hex of the previous checkpoint's body ("" for n = 0),
     "table_version": the Delta version of the lake the checkpoint was taken at,
     "log": {"origin", "tree_size", "root", "frontier"}}

(``table_version`` is absent from checkpoints written before the lake was a Delta table,
``log`` from those written before the log tree.) ``log`` is the lake-wide *log tree*
(``logtree``): one append-only RFC 6962 tree over every row the chain covers, in the order the
checkpoints covered them. Its C2SP tlog-checkpoint note (``treehead``), signed by the same key,
is stored beside the checkpoint as ``<sequence>.note``, with the witnesses' cosignatures
appended as they arrive.

The file adds ``"signature"`` (base64 Ed25519 over the body) and ``"operations"``:
``{operation_id: {"last_seq", "head_hash", "closed"}}``, bound to the signature by its digest,
so an inclusion proof carries the body and signature without the operations.
A source entry covers every lake row of the source up to ``last_offset``: ``tree_size`` rows
whose Merkle ``root`` and ``frontier`` (hex) are those of their hashes in offset order. A
checkpoint lists only the sources that grew and the operations whose chain head moved since
the previous one, so its size follows the new events, not the lake; folding the chain
(``ChainState``) gives the coverage of every source and the head of every operation. Each
checkpoint is one file ``<sequence>.json``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from secureml.audit._fs import make_private_dir, write_atomically
from secureml.integrity.exceptions import NoteError
from secureml.integrity.notes import SignedNote, parse_note
from secureml.integrity.treehead import TreeHead

FORMAT_VERSION = 1
CHECKPOINTS_DIR = "_checkpoints"
LAKE_PUBLIC_KEY = "public_key.pem"
SUFFIX = ".json"
NOTE_SUFFIX = ".note"


def canonical_json(value: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, compact separators, ASCII only."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass(frozen=True)
class SourceCoverage:
    """What a checkpoint covers of one source."""

    tree_size: int
    last_offset: int
    root: str
    frontier: tuple[str, ...]


@dataclass(frozen=True)
class LogTree:
    """What a checkpoint covers of the log tree: its origin, size, root and frontier (hex)."""

    origin: str
    tree_size: int
    root: str
    frontier: tuple[str, ...]

    def head(self) -> TreeHead:
        """The C2SP tree head of this log tree."""
        return TreeHead(self.origin, self.tree_size, bytes.fromhex(self.root))


@dataclass(frozen=True)
class OperationHead:
    """The last event of an operation a checkpoint covers."""

    last_seq: int
    head_hash: str
    closed: bool


def operations_digest(operations: dict[str, OperationHead]) -> str:
    """SHA-256 hex of the canonical JSON of a checkpoint's operations."""
    return hashlib.sha256(canonical_json({op: asdict(h) for op, h in operations.items()})).hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    """One signed checkpoint (``operations`` is empty in the copy an inclusion proof carries)."""

    sequence: int
    created_at: str
    key_id: str
    sources: dict[str, SourceCoverage]
    operations_sha256: str
    prev_checkpoint_hash: str
    operations: dict[str, OperationHead] = field(default_factory=dict)
    signature: str = ""
    table_version: int | None = None
    log: LogTree | None = None

    @classmethod
    def new(
        cls, sequence: int, created_at: str, key_id: str, sources: dict[str, SourceCoverage],
        operations: dict[str, OperationHead], prev_checkpoint_hash: str, table_version: int | None = None,
        log: LogTree | None = None,
    ) -> Checkpoint:
        """An unsigned checkpoint."""
        return cls(sequence, created_at, key_id, sources, operations_digest(operations), prev_checkpoint_hash,
                   operations, table_version=table_version, log=log)

    def body(self) -> dict[str, Any]:
        """What the signature covers, as JSON values."""
        return {
            "version": FORMAT_VERSION,
            "sequence": self.sequence,
            "created_at": self.created_at,
            "key_id": self.key_id,
            "sources": {s: {**asdict(c), "frontier": list(c.frontier)} for s, c in self.sources.items()},
            "operations_sha256": self.operations_sha256,
            "prev_checkpoint_hash": self.prev_checkpoint_hash,
        } | ({} if self.table_version is None else {"table_version": self.table_version}) | (
            {} if self.log is None else {"log": {**asdict(self.log), "frontier": list(self.log.frontier)}})

    def signed_bytes(self) -> bytes:
        """The bytes the signature covers."""
        return canonical_json(self.body())

    def digest(self) -> str:
        """SHA-256 hex of the body: what the next checkpoint's ``prev_checkpoint_hash`` holds."""
        return hashlib.sha256(self.signed_bytes()).hexdigest()

    def operations_intact(self) -> bool:
        """True when the operations are the ones the signed digest names."""
        return operations_digest(self.operations) == self.operations_sha256

    def head(self) -> dict[str, Any]:
        """Body and signature: the part an inclusion proof carries."""
        return {**self.body(), "signature": self.signature}

    def to_dict(self) -> dict[str, Any]:
        """The whole record as JSON values."""
        return {**self.head(), "operations": {op: asdict(h) for op, h in self.operations.items()}}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Checkpoint:
        """Parse a record or a head (raises KeyError, TypeError or ValueError when malformed)."""
        if raw["version"] != FORMAT_VERSION:
            raise ValueError(f"checkpoint format version {raw['version']!r}, this verifier reads {FORMAT_VERSION}")
        sources = {
            str(s): SourceCoverage(int(c["tree_size"]), int(c["last_offset"]), str(c["root"]),
                                   tuple(str(n) for n in c["frontier"]))
            for s, c in raw["sources"].items()
        }
        operations = {
            str(op): OperationHead(int(h["last_seq"]), str(h["head_hash"]), bool(h["closed"]))
            for op, h in raw.get("operations", {}).items()
        }
        log = raw.get("log")
        return cls(int(raw["sequence"]), str(raw["created_at"]), str(raw["key_id"]), sources,
                   str(raw["operations_sha256"]), str(raw["prev_checkpoint_hash"]), operations, str(raw["signature"]),
                   None if raw.get("table_version") is None else int(raw["table_version"]),
                   None if log is None else LogTree(str(log["origin"]), int(log["tree_size"]), str(log["root"]),
                                                    tuple(str(n) for n in log["frontier"])))


@dataclass
class ChainState:
    """A chain of checkpoints folded: each source's and operation's latest entry, with its checkpoint's sequence."""

    sources: dict[str, tuple[int, SourceCoverage]] = field(default_factory=dict)
    heads: dict[str, tuple[int, OperationHead]] = field(default_factory=dict)

    def add(self, checkpoint: Checkpoint) -> None:
        """Fold in the next checkpoint of the chain."""
        self.sources.update((s, (checkpoint.sequence, c)) for s, c in checkpoint.sources.items())
        self.heads.update((op, (checkpoint.sequence, h)) for op, h in checkpoint.operations.items())


@dataclass(frozen=True)
class StoredCheckpoint:
    """A checkpoint file of the lake: its record, or why it could not be read."""

    name: str
    checkpoint: Checkpoint | None
    problem: str | None = None


def checkpoint_dir(lake_root: Path) -> Path:
    """Directory of a lake's checkpoints."""
    return lake_root / CHECKPOINTS_DIR


def checkpoint_files(lake_root: Path) -> list[Path]:
    """The checkpoint files of a lake, in sequence order."""
    directory = checkpoint_dir(lake_root)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.endswith(SUFFIX) and not p.name.startswith("."))


def read_checkpoint(path: Path) -> StoredCheckpoint:
    """One checkpoint file, parsed."""
    try:
        return StoredCheckpoint(path.name, Checkpoint.from_dict(json.loads(path.read_text("utf-8"))))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return StoredCheckpoint(path.name, None, f"{type(exc).__name__}: {exc}")


def stored_checkpoints(lake_root: Path) -> list[StoredCheckpoint]:
    """Every checkpoint file of the lake, parsed, in sequence order."""
    return [read_checkpoint(path) for path in checkpoint_files(lake_root)]


def write_checkpoint(lake_root: Path, checkpoint: Checkpoint) -> Path:
    """Store a signed checkpoint as a new owner-only file; an existing checkpoint is never replaced."""
    path = make_private_dir(checkpoint_dir(lake_root)) / f"{checkpoint.sequence:012d}{SUFFIX}"
    write_atomically(path, canonical_json(checkpoint.to_dict()) + b"\n", 0o600, replace=False)
    return path


def note_path(lake_root: Path, sequence: int) -> Path:
    """Where the C2SP checkpoint note (with its cosignatures) of a checkpoint is kept."""
    return checkpoint_dir(lake_root) / f"{sequence:012d}{NOTE_SUFFIX}"


def write_note(lake_root: Path, sequence: int, note: SignedNote) -> Path:
    """Store (or replace, when cosignatures were added) a checkpoint's note, owner-only, whole or not at all."""
    make_private_dir(checkpoint_dir(lake_root))
    path = note_path(lake_root, sequence)
    write_atomically(path, note.encode().encode(), 0o600, replace=True)
    return path


def read_note(lake_root: Path, sequence: int) -> SignedNote | None:
    """The stored note of a checkpoint; None when there is none. NoteError when it is malformed."""
    path = note_path(lake_root, sequence)
    try:
        return parse_note(path.read_bytes(), str(path))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise NoteError(f"{path}: unreadable: {exc.strerror}") from None


def write_lake_public_key(lake_root: Path, pem: bytes) -> Path:
    """Keep a copy of the signing public key in the lake, for convenience (not for trust)."""
    path = make_private_dir(checkpoint_dir(lake_root)) / LAKE_PUBLIC_KEY
    if not path.exists() or path.read_bytes() != pem:
        write_atomically(path, pem, 0o600, replace=True)  # the lake is owner-only throughout
    return path
