"""Tamper campaign: 130 seeded random tampers per transport, each detected and located by ``verify``.

A lake is built through the real pipeline (Kafka, or the embedded log), materialised in four
runs (so several files, sources and checkpoints), then copied once per tamper; the copy is
altered the way an attacker with write access to the files would, and verified with the
operator's public key. A tamper counts as located when an error names the right operation
and seq, the right file, or (for re-signed lakes) the forged checkpoints.
"""

from __future__ import annotations

import random
import shutil
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from support.integrity import (  # noqa: F401 - signing_key_fixture is autouse
    EVENT_FIELDS,
    Keys,
    LakeRows,
    copy_lake,
    event_hash,
    log_function_calls,
    log_operations,
    materialize,
    signing_key_fixture,
)

from conftest import Harness
from secureml.integrity import LakeCheckpointer, VerificationResult, verify
from secureml.integrity.result import DELETED_OPERATION, FILE_MISSING, SIGNATURE_INVALID
from secureml.lake.rows import lake_schema

ROUNDS, OPERATIONS_PER_ROUND, EVENTS = 4, 5, 10
PLAN = {
    "change_field": 25,
    "change_field_rehashed": 20,
    "delete_event": 15,
    "swap_events": 8,
    "swap_events_rehashed": 7,
    "insert_forged_event": 10,
    "insert_forged_operation": 5,
    "delete_file": 6,
    "delete_file_leave_manifest": 4,
    "drop_tail": 10,
    "delete_operation": 10,
    "rewrite_chain_rehashed": 6,
    "rewrite_and_resign": 4,
}


@dataclass(frozen=True)
class Expect:
    """Where a tamper must be reported."""

    operations: dict[str, set[int] | None] = field(default_factory=dict)  # op -> seqs (None: any)
    every_operation: bool = False  # all listed operations must be named, not just one
    files: frozenset[str] = frozenset()
    kinds: frozenset[str] = frozenset()  # when set, the locating finding must be of one of these kinds
    forged_checkpoints: bool = False


def located(result: VerificationResult, expect: Expect) -> bool:
    """True when the errors name what the tamper touched."""
    errors = [f for f in result.errors if not expect.kinds or f.kind in expect.kinds]
    if expect.forged_checkpoints:
        return any(f.kind == SIGNATURE_INVALID and f.checkpoint is not None for f in errors)
    if expect.files:
        return any(expect.files & set(f.files) for f in errors)

    def named(op: str, seqs: set[int] | None) -> bool:
        return any(f.operation_id == op and (seqs is None or seqs & set(f.seqs)) for f in errors)

    hits = [named(op, seqs) for op, seqs in expect.operations.items()]
    return all(hits) if expect.every_operation else any(hits)


def _different(name: str, value: Any, rng: random.Random) -> Any:
    """Another value of the field's type."""
    kind = lake_schema().field(name).type
    if pa.types.is_timestamp(kind):
        return value + __import__("datetime").timedelta(microseconds=rng.randint(1, 10**6))
    if pa.types.is_boolean(kind):
        return not value
    if pa.types.is_integer(kind):
        return (value or 0) + rng.randint(1, 3)
    if pa.types.is_floating(kind):
        return (value or 0.0) + 0.5
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return [*(value or []), "x"]
    return (value or "") + rng.choice(["x", "é", " "])


def _rows_of(rows: LakeRows, rng: random.Random) -> tuple[str, dict[str, Any]]:
    return rng.choice(list(rows.all()))


def change_field(rows: LakeRows, rng: random.Random, rehash: bool) -> Expect:
    """Change one field of one event (optionally recomputing that event's hash)."""
    _path, row = _rows_of(rows, rng)
    before = (row["operation_id"], row["seq"])
    name = rng.choice([n for n in EVENT_FIELDS if not (rehash and n == "hash")])
    row[name] = _different(name, row[name], rng)
    if rehash:
        row["hash"] = event_hash(row)
    rows.save()
    return Expect({before[0]: {before[1]}, row["operation_id"]: {row["seq"]}})


def delete_event(rows: LakeRows, rng: random.Random) -> Expect:
    """Delete one event."""
    _path, row = _rows_of(rows, rng)
    rows.remove(lambda r: r is row)
    rows.save()
    return Expect({row["operation_id"]: {row["seq"]}})


def swap_events(rows: LakeRows, rng: random.Random, rehash: bool) -> Expect:
    """Swap the places of two events of one operation (optionally recomputing both hashes)."""
    op, op_rows = rng.choice(list(rows.operations().items()))
    (_, a), (_, b) = rng.sample(op_rows, 2)
    seqs = {a["seq"], b["seq"]}
    for key in ("seq", "event_id"):
        a[key], b[key] = b[key], a[key]
    if rehash:
        a["hash"], b["hash"] = event_hash(a), event_hash(b)
    rows.save()
    return Expect({op: seqs})


def insert_forged(rows: LakeRows, rng: random.Random, new_operation: bool) -> Expect:
    """Insert a self-consistent forged event, in an existing operation or as a new one, inside signed positions."""
    _path, template = _rows_of(rows, rng)
    operations = rows.operations()
    if new_operation:
        op, seq, prev = str(uuid.uuid4()), 0, ""
    else:
        op = template["operation_id"]
        seq = rng.randrange(len(operations[op]) + 1)
        prev = operations[op][seq - 1][1]["hash"] if seq else ""
    forged = {**template, "operation_id": op, "seq": seq, "event_id": f"{op}:{seq}", "prev_hash": prev,
              "user": "mallory"}
    forged["hash"] = event_hash(forged)
    rows.tables[rng.choice(list(rows.tables))].append(forged)
    rows.save()
    return Expect({op: {seq}})


def delete_file(rows: LakeRows, rng: random.Random, leave_manifest: bool) -> Expect:
    """Delete one Parquet file, and (with a Delta commit) its entry in the table unless told to leave it."""
    path = rng.choice(list(rows.tables))
    if leave_manifest:
        Path(rows.uris[path]).unlink()
        return Expect(files=frozenset({path}), kinds=frozenset({FILE_MISSING}))
    lost: dict[str, set[int] | None] = {}
    for row in rows.tables[path]:
        lost.setdefault(row["operation_id"], set()).add(row["seq"])  # type: ignore[union-attr]
    rows.tables[path] = []
    rows.save()
    return Expect(lost, every_operation=True)


def drop_tail(rows: LakeRows, rng: random.Random) -> Expect:
    """Drop the last 1-5 events of one source (a partition or a segment)."""
    source = rng.choice(sorted({r["source"] for _p, r in rows.all()}))
    ordered = sorted((r for _p, r in rows.all() if r["source"] == source), key=lambda r: r["source_offset"])
    tail = ordered[-rng.randint(1, min(5, len(ordered))):]
    dropped = {id(r) for r in tail}
    rows.remove(lambda r: id(r) in dropped)
    rows.save()
    lost: dict[str, set[int] | None] = {}
    for row in tail:
        lost.setdefault(row["operation_id"], set()).add(row["seq"])  # type: ignore[union-attr]
    return Expect(lost, every_operation=True)


def delete_operation(rows: LakeRows, rng: random.Random) -> Expect:
    """Delete every event of one operation."""
    op = rng.choice(sorted(rows.operations()))
    rows.remove(lambda r: r["operation_id"] == op)
    rows.save()
    return Expect({op: None}, kinds=frozenset({DELETED_OPERATION}))


def rewrite_chain(rows: LakeRows, rng: random.Random, attacker_key: Path | None) -> Expect:
    """Change one event and recompute every later hash of its chain; optionally re-sign the whole lake."""
    op, op_rows = rng.choice(list(rows.operations().items()))
    start = rng.randrange(len(op_rows))
    op_rows[start][1]["user"] = "mallory"
    for i in range(start, len(op_rows)):
        row = op_rows[i][1]
        if i > start:
            row["prev_hash"] = op_rows[i - 1][1]["hash"]
        row["hash"] = event_hash(row)
    rows.save()
    if attacker_key is None:
        return Expect({op: set(range(start, len(op_rows)))})
    shutil.rmtree(rows.lake.root / "_checkpoints")
    LakeCheckpointer(attacker_key, create_key=True).checkpoint(rows.lake)
    return Expect(forged_checkpoints=True)


def tamper(kind: str, rows: LakeRows, rng: random.Random, attacker_key: Path) -> Expect:
    """Apply one tamper of the named kind."""
    actions: dict[str, Callable[[], Expect]] = {
        "change_field": lambda: change_field(rows, rng, rehash=False),
        "change_field_rehashed": lambda: change_field(rows, rng, rehash=True),
        "delete_event": lambda: delete_event(rows, rng),
        "swap_events": lambda: swap_events(rows, rng, rehash=False),
        "swap_events_rehashed": lambda: swap_events(rows, rng, rehash=True),
        "insert_forged_event": lambda: insert_forged(rows, rng, new_operation=False),
        "insert_forged_operation": lambda: insert_forged(rows, rng, new_operation=True),
        "delete_file": lambda: delete_file(rows, rng, leave_manifest=False),
        "delete_file_leave_manifest": lambda: delete_file(rows, rng, leave_manifest=True),
        "drop_tail": lambda: drop_tail(rows, rng),
        "delete_operation": lambda: delete_operation(rows, rng),
        "rewrite_chain_rehashed": lambda: rewrite_chain(rows, rng, None),
        "rewrite_and_resign": lambda: rewrite_chain(rows, rng, attacker_key),
    }
    return actions[kind]()


def build_lake(harness: Harness, rng: random.Random) -> None:
    """Log and materialise the campaign's lake in several runs."""
    for _ in range(ROUNDS):
        log_operations(harness, rng, OPERATIONS_PER_ROUND, EVENTS)
        log_function_calls(harness, 1)
        materialize(harness)


def test_every_tamper_is_detected_and_located(
    harness: Harness, signing_key: Keys, tmp_path: Path
) -> None:
    """130 random tampers of 13 kinds on a lake of this transport: every one fails verification, located."""
    rng = random.Random(20261128 + (harness.kind == "kafka"))
    build_lake(harness, rng)
    baseline = verify(harness.log_dir, public_key=signing_key.public)
    assert baseline.ok and not baseline.warnings, [f.message for f in baseline.all_findings()]
    assert len(baseline.checkpoints) == ROUNDS and baseline.events == ROUNDS * (OPERATIONS_PER_ROUND * EVENTS + 4)
    counts: Counter[str] = Counter()
    missed: list[str] = []
    for number, kind in enumerate(k for k, n in PLAN.items() for _ in range(n)):
        copy = copy_lake(harness.log_dir, tmp_path / f"tampered-{number}")
        expect = tamper(kind, LakeRows.load(copy), rng, tmp_path / "attacker" / f"{number}.pem")
        result = verify(copy, public_key=signing_key.public)
        counts[kind] += 1
        if result.ok or not located(result, expect):
            missed.append(f"#{number} {kind}: expected {expect}, got {[f.message for f in result.errors][:6]}")
        shutil.rmtree(copy)
    print(f"\n{harness.kind}: {sum(counts.values())} tampers, all detected and located: {not missed}; {dict(counts)}")
    assert not missed, "\n".join(missed)
    assert sum(counts.values()) == sum(PLAN.values()) == 130



def test_nulls_in_required_columns_and_absurd_values_are_located(
    embedded: Harness, signing_key: Keys, tmp_path: Path
) -> None:
    """A null in any required column, or a seq of 10**15, is reported at its operation and seq, without crashing."""
    rng = random.Random(41)
    log_operations(embedded, rng, 3, 6)
    materialize(embedded)
    cases = [(f.name, None) for f in lake_schema() if not f.nullable] + [("seq", 10**15)]
    for number, (name, value) in enumerate(cases):
        copy = copy_lake(embedded.log_dir, tmp_path / f"odd-{number}")
        rows = LakeRows.load(copy)
        rows.schemas = {path: pa.schema([f.with_nullable(True) for f in s]) for path, s in rows.schemas.items()}
        _path, row = _rows_of(rows, rng)
        expect = Expect({row["operation_id"]: {row["seq"]}})
        row[name] = value
        rows.save()
        result = verify(copy, public_key=signing_key.public)
        assert not result.ok and located(result, expect), name
