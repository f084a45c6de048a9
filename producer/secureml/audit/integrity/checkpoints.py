"""Signed checkpoints: the record, its canonical bytes, and its files under ``lake/_checkpoints``.

A checkpoint is canonical JSON (sorted keys, no spaces, ASCII) of::

    {"version": 1, "sequence": n, "created_at": ISO-8601 UTC, "key_id": fingerprint,
     "sources": {source: {"tree_size", "last_offset", "root", "frontier"}},
     "operations": {operation_id: {"last_seq", "head_hash", "closed"}},
     "prev_checkpoint_hash": SHA-256 hex of the previous checkpoint's body ("" for n = 0)}

plus ``"signature"``: base64 Ed25519 over the canonical bytes of everything else (the *body*).
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
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from secureml.audit.transports.embedded import make_private_dir

FORMAT_VERSION = 1
CHECKPOINTS_DIR = "_checkpoints"
LAKE_PUBLIC_KEY = "public_key.pem"
SUFFIX = ".json"


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
class OperationHead:
    """The last event of an operation a checkpoint covers."""

    last_seq: int
    head_hash: str
    closed: bool


@dataclass(frozen=True)
class Checkpoint:
    """One signed checkpoint."""

    sequence: int
    created_at: str
    key_id: str
    sources: dict[str, SourceCoverage]
    operations: dict[str, OperationHead]
    prev_checkpoint_hash: str
    signature: str = field(default="", compare=False)

    def body(self) -> dict[str, Any]:
        """Every field but the signature, as JSON values."""
        return {
            "version": FORMAT_VERSION,
            "sequence": self.sequence,
            "created_at": self.created_at,
            "key_id": self.key_id,
            "sources": {s: {**asdict(c), "frontier": list(c.frontier)} for s, c in self.sources.items()},
            "operations": {op: asdict(h) for op, h in self.operations.items()},
            "prev_checkpoint_hash": self.prev_checkpoint_hash,
        }

    def signed_bytes(self) -> bytes:
        """The bytes the signature covers."""
        return canonical_json(self.body())

    def digest(self) -> str:
        """SHA-256 hex of the body: what the next checkpoint's ``prev_checkpoint_hash`` holds."""
        return hashlib.sha256(self.signed_bytes()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """The signed record as JSON values."""
        return {**self.body(), "signature": self.signature}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Checkpoint:
        """Parse a record (raises KeyError, TypeError or ValueError when malformed)."""
        if raw["version"] != FORMAT_VERSION:
            raise ValueError(f"checkpoint format version {raw['version']!r}, this verifier reads {FORMAT_VERSION}")
        sources = {
            str(s): SourceCoverage(int(c["tree_size"]), int(c["last_offset"]), str(c["root"]),
                                   tuple(str(n) for n in c["frontier"]))
            for s, c in raw["sources"].items()
        }
        operations = {
            str(op): OperationHead(int(h["last_seq"]), str(h["head_hash"]), bool(h["closed"]))
            for op, h in raw["operations"].items()
        }
        return cls(int(raw["sequence"]), str(raw["created_at"]), str(raw["key_id"]), sources, operations,
                   str(raw["prev_checkpoint_hash"]), str(raw["signature"]))


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
    """Store a signed checkpoint as a new owner-only file, atomically; never replaces one."""
    directory = make_private_dir(checkpoint_dir(lake_root))
    final = directory / f"{checkpoint.sequence:012d}{SUFFIX}"
    tmp = directory / f".{final.name}.tmp-{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(canonical_json(checkpoint.to_dict()) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, final)  # fails if that sequence exists: a checkpoint is never rewritten
    finally:
        tmp.unlink(missing_ok=True)
    return final


def write_lake_public_key(lake_root: Path, pem: bytes) -> Path:
    """Keep a copy of the signing public key in the lake, for convenience (not for trust)."""
    path = make_private_dir(checkpoint_dir(lake_root)) / LAKE_PUBLIC_KEY
    if not path.exists() or path.read_bytes() != pem:
        tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
        tmp.write_bytes(pem)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    return path
