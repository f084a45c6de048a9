"""Retention records: what one ``retention apply`` removed, signed like the checkpoints.

A record is ``lake/_retention/records/<sequence>.json``; its signed *body* is canonical JSON
(as checkpoints) of::

    {"version": 1, "sequence": n, "created_at", "evaluated_at": the "now" expiry was judged at,
     "key_id": signer ("" when not signed), "prev_record_hash": SHA-256 of the previous body,
     "policy": the normalised policy, "holds": the legal holds in force,
     "events": n, "counts": {event_type: n}, "range": {"first", "last"} (event times),
     "table_version_before", "table_version_after",
     "removed": {"file", "sha256", "rows", "merkle_root"}, "segments": [{"name", "bytes"}]}

and the file adds ``"signature"`` (base64 Ed25519 over the body, with the checkpoints' key;
"" when no key was available: then the record proves nothing). ``removed.file`` sits beside
it (``<sequence>.removed.parquet``): one row per removed event with what verification needs to
put it back in its chain and its Merkle trees (ids, seq, type, hashes, source position,
time, regulations), never its payload. ``merkle_root`` is the RFC 6962 root of their leaf
hashes in (source, offset) order.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from secureml.audit._fs import make_private_dir, replacing, write_atomically
from secureml.integrity.checkpoints import canonical_json
from secureml.integrity.scan import SKELETON

FORMAT_VERSION = 1
RECORDS_DIR = "records"
SUFFIX = ".json"
REMOVED_SUFFIX = ".removed.parquet"
PENDING_FILE = "pending.json"  # the record-to-be of an apply, from before its delete commit until its record
COMMIT_KEY = "secureml-audit.retention-record"  # Delta commitInfo field naming the record a delete belongs to

# One row per removed event: the verifier's skeleton (without the file index), its time and regulations.
REMOVED_SCHEMA = pa.schema([f for f in SKELETON if f.name != "file"] + [
    pa.field("timestamp", pa.timestamp("us", tz="UTC")), pa.field("regulations", pa.list_(pa.large_string())),
])


@dataclass(frozen=True)
class RetentionRecord:
    """One retention record: its signed body and signature."""

    body: dict[str, Any]
    signature: str = ""

    @property
    def sequence(self) -> int:
        """Its number in the chain of records."""
        return int(self.body["sequence"])

    def signed_bytes(self) -> bytes:
        """The bytes the signature covers."""
        return canonical_json(self.body)

    def digest(self) -> str:
        """SHA-256 hex of the body: the next record's ``prev_record_hash``."""
        return hashlib.sha256(self.signed_bytes()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """The file's JSON."""
        return {**self.body, "signature": self.signature}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RetentionRecord:
        """Parse a record file's JSON (KeyError, TypeError or ValueError when malformed)."""
        body = {k: v for k, v in raw.items() if k != "signature"}
        if body["version"] != FORMAT_VERSION:
            raise ValueError(f"retention record format {body['version']!r}, this version reads {FORMAT_VERSION}")
        for name in ("sequence", "events", "table_version_before"):
            int(body[name])
        str(body["removed"]["file"]), str(body["removed"]["sha256"])
        return cls(body, str(raw["signature"]))


@dataclass(frozen=True)
class StoredRecord:
    """A record file: the record, or why it could not be read."""

    path: Path
    record: RetentionRecord | None
    problem: str | None = None


def records_dir(retention_root: Path) -> Path:
    """Directory of the retention records."""
    return retention_root / RECORDS_DIR


def stored_records(retention_root: Path) -> list[StoredRecord]:
    """Every record file, parsed, in sequence order."""
    directory = records_dir(retention_root)
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(p for p in directory.iterdir() if p.name.endswith(SUFFIX) and not p.name.startswith(".")):
        try:
            found.append(StoredRecord(path, RetentionRecord.from_dict(json.loads(path.read_text("utf-8")))))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            found.append(StoredRecord(path, None, f"{type(exc).__name__}: {exc}"))
    return found


def removed_path(retention_root: Path, record: RetentionRecord) -> Path:
    """The removed-events file a record names (always inside the records folder)."""
    return records_dir(retention_root) / Path(str(record.body["removed"]["file"])).name


def write_removed(retention_root: Path, sequence: int, batches: Iterable[pa.RecordBatch]) -> tuple[str, str]:
    """Store the removed events' file for a record, a batch at a time (REMOVED_SCHEMA); returns its name and SHA-256."""
    directory = make_private_dir(records_dir(retention_root))
    path = directory / f"{sequence:012d}{REMOVED_SUFFIX}"
    with replacing(path, 0o600, replace=True) as tmp, pq.ParquetWriter(tmp, REMOVED_SCHEMA, compression="zstd") as out:
        for batch in batches:
            out.write_batch(batch)
    return path.name, file_sha256(path)


def file_sha256(path: Path) -> str:
    """SHA-256 hex of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_record(retention_root: Path, record: RetentionRecord) -> Path:
    """Store a record as a new owner-only file; an existing record is never replaced."""
    path = make_private_dir(records_dir(retention_root)) / f"{record.sequence:012d}{SUFFIX}"
    write_atomically(path, canonical_json(record.to_dict()) + b"\n", 0o600, replace=False)
    return path
