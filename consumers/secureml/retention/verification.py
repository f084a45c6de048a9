"""What ``verify`` learns from retention records: events expired under a valid record are put back as such.

The events a signed record lists (their ids, seqs, hashes and source positions) rejoin the rows
the verifier checks, so chains with an expired prefix or middle still link and Merkle roots
over expired positions still hold; each is re-judged against the record's own policy and holds.
An event gone without a valid record still shows as missing, located by operation and seq.
A record whose signature, chain link or events file does not hold vouches for nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from secureml.integrity.keys import key_id, signature_valid
from secureml.integrity.result import Finding
from secureml.integrity.scan import SKELETON
from secureml.lake.table import Lake
from secureml.retention.holds import RETENTION_DIR, Hold, held_sql
from secureml.retention.policy import RetentionPolicy
from secureml.retention.positions import position_keys
from secureml.retention.records import PENDING_FILE, RetentionRecord, file_sha256, removed_path, stored_records

RECORD_INVALID = "retention_record_invalid"  # a record altered, forged, unsigned in a signed lake, or unlinked
NOT_EXPIRED = "removed_not_expired"  # a signed record removed events its own policy had not expired
RECORD_UNSIGNED = "retention_record_unsigned"  # warning: an unsigned record in a lake without signed checkpoints


@dataclass
class Expiry:
    """Expired events the records vouch for (SKELETON rows), their file names, findings and notes."""

    rows: pa.Table
    files: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    segments: set[str] = field(default_factory=set)  # "log/<segment>" sources the records deleted
    notes: list[str] = field(default_factory=list)
    events: int = 0


def _not_expired(record: RetentionRecord, removed: pa.Table) -> list[dict[str, object]]:
    """Removed events the record's own policy had not expired at its time, or its holds kept."""
    moment = dt.datetime.fromisoformat(record.body["evaluated_at"].replace("Z", "+00:00"))
    holds = [Hold(h["kind"], h["value"]) for h in record.body["holds"]]
    expired = RetentionPolicy.from_dict(record.body["policy"]).expired_sql(moment, "duckdb")
    con = duckdb.connect(config={"threads": 2})
    try:
        # the held columns a record does not keep are blank: a subject hold is re-judged where it can be
        con.register("removed", removed.append_column("user", pa.nulls(removed.num_rows, pa.string()))
                     .append_column("user_id", pa.nulls(removed.num_rows, pa.string())))
        return con.sql(f"SELECT operation_id, seq FROM removed WHERE NOT ({expired}) OR {held_sql(holds)} "
                       "ORDER BY operation_id, seq LIMIT 1000").to_arrow_table().to_pylist()
    finally:
        con.close()


def _problem(record: RetentionRecord, previous: RetentionRecord | None, key: Ed25519PublicKey | None,
             signed_lake: bool, removed_file: Path) -> tuple[str | None, bool]:
    """(why the record vouches for nothing, or None; whether it is merely unsigned in an unsigned lake)."""
    expected = previous.sequence + 1 if previous else 0
    if record.sequence != expected:
        return f"its sequence is #{record.sequence}, expected #{expected}: a record was removed or inserted", False
    if record.body["prev_record_hash"] != (previous.digest() if previous else ""):
        return "it does not link to the record before it: one of them was replaced", False
    if not record.signature:
        if signed_lake:
            return "it is not signed, yet the lake's checkpoints are: its removals are not proven", False
        return None, True
    if key is None:
        return "no public key to check its signature with: pass --public-key", False
    if record.body["key_id"] != key_id(key) or not signature_valid(key, record.signed_bytes(), record.signature):
        return "its signature does not match its content (or another key signed it): the record was altered", False
    if not removed_file.is_file():
        return f"the file of its removed events ({removed_file.name}) is gone", False
    if file_sha256(removed_file) != record.body["removed"]["sha256"]:
        return f"the file of its removed events ({removed_file.name}) is not the one it signed: altered", False
    return None, False


def expired_events(
    lake: Lake, lake_rows: pa.Table, key: Ed25519PublicKey | None, signed_lake: bool, first_file: int,
    operation_id: str | None = None, as_of_version: int | None = None,
) -> Expiry:
    """The events the lake's valid retention records expired, ready to join the verifier's rows."""
    root = lake.root / RETENTION_DIR
    expiry = Expiry(SKELETON.empty_table())
    parts: list[pa.Table] = []
    previous: RetentionRecord | None = None
    present: pa.Array | None = None
    for stored in stored_records(root):
        record = stored.record
        name = stored.path.name
        if record is None:
            expiry.findings.append(Finding(RECORD_INVALID, "error", f"retention record {name} is unreadable "
                                           f"({stored.problem}): restore it from a backup", files=(name,)))
            continue
        if as_of_version is not None and int(record.body["table_version_before"]) >= as_of_version:
            break  # the lake as it was before this record
        removed_file = removed_path(root, record)
        problem, unsigned = _problem(record, previous, key, signed_lake, removed_file)
        previous = record
        label = f"retention record #{record.sequence}"
        if problem is not None:
            listed = record.body["events"]
            expiry.findings.append(Finding(RECORD_INVALID, "error", f"{label}: {problem}; the {listed:,} events it "
                                           "lists count as deleted", files=(name,)))
            continue
        removed = pq.read_table(removed_file)
        if unsigned:
            expiry.findings.append(Finding(RECORD_UNSIGNED, "warning", f"{label} is not signed: its "
                                           f"{removed.num_rows:,} expired events are taken on trust", files=(name,)))
        for row in _not_expired(record, removed):
            expiry.findings.append(Finding(NOT_EXPIRED, "error", f"{row['operation_id']}: {label} removed the event "
                                           f"at seq {row['seq']}, which its policy had not expired (or a hold kept)",
                                           str(row["operation_id"]), (int(row["seq"]),), files=(name,)))
        present = position_keys(lake_rows) if present is None else present
        removed = removed.filter(pc.invert(pc.is_in(position_keys(removed), value_set=present)))  # still there: kept
        if operation_id is not None:
            removed = removed.filter(pc.equal(removed["operation_id"], operation_id))
        index = first_file + len(expiry.files)
        expiry.files.append(f"_retention/records/{removed_file.name}")
        parts.append(removed.select([f.name for f in SKELETON if f.name != "file"]).append_column(
            "file", pa.repeat(pa.scalar(index, pa.int32()), removed.num_rows)).cast(SKELETON))
        expiry.segments.update(f"log/{s['name']}" for s in record.body.get("segments", []))
        expiry.events += removed.num_rows
        expiry.notes.append(f"{removed.num_rows:,} events expired under {label} of {record.body['created_at']} "
                            f"(table version {record.body['table_version_before']} -> "
                            f"{record.body['table_version_after']})" + ("" if record.signature else ", NOT SIGNED"))
    if (root / PENDING_FILE).exists():
        expiry.findings.append(Finding(RECORD_INVALID, "warning", "a retention apply was interrupted "
                                       f"({root / PENDING_FILE}): if its delete committed, the events it removed show "
                                       "as missing until `secureml-audit retention apply` completes its record"))
    if parts:
        expiry.rows = pa.concat_tables(parts)
    return expiry
