"""Helpers the integrity tests share: signing keys, lakes built through a real transport, Parquet surgery.

No tests here. The surgery works like a careful attacker: it rewrites the Parquet files of the
Delta table in place, and a file it empties is removed from the table with a proper Delta
commit, so what verification catches is the integrity layer's doing, not bookkeeping.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from conftest import Harness
from secureml.audit import AuditTrail, audit_function
from secureml.audit.codec import canonical_bytes
from secureml.audit.schema import SCHEMA_VERSION, TIMESTAMP_FIELDS, field_names, known_versions
from secureml.audit.timeutil import EPOCH
from secureml.integrity.keys import SIGNING_KEY_ENV, generate_key, public_key_path
from secureml.lake.table import Lake

EVENT_FIELDS = field_names()


@dataclass(frozen=True)
class Keys:
    """A signing key made for one test, outside the lake and outside the home directory."""

    private: Path
    public: Path


@pytest.fixture(autouse=True, name="signing_key")
def signing_key_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _clean_environment: None) -> Keys:
    """A fresh signing key the checkpointer picks up (SECUREML_AUDIT_SIGNING_KEY), never the home directory's."""
    private = tmp_path / "keys" / "signing_key.pem"
    generate_key(private)
    monkeypatch.setenv(SIGNING_KEY_ENV, str(private))
    return Keys(private, public_key_path(private))


def materialize(harness: Harness, **options: Any) -> None:
    """Run the materializer once over what was logged so far (a restart every time), with its checkpointer."""
    from secureml.materializer import materialize as run

    run(harness.log_dir, bootstrap_servers=harness.bootstrap, topic=harness.topic, group=f"test-{harness.topic}",
        once=True, **options)


def log_operations(harness: Harness, rng: random.Random, operations: int, events: int) -> list[str]:
    """Log closed operations of ``events`` events each, with varied payloads; returns their ids."""
    ids = []
    options = harness.options()
    for n in range(operations):
        trail = AuditTrail(
            rng.choice(["training", "scoring", "préparation", "export"]), context={"run": n, "note": "é✓"},
            regulations=rng.choice([[], ["GDPR"], ["GDPR", "CCPA"]]), user=rng.choice([None, "ana"]), **options,
        )
        for i in range(events - 2):
            _log_one(trail, rng, i)
        trail.close(rng.choice(["completed", "failed"]))
        ids.append(trail.operation_id)
    return ids


def _log_one(trail: AuditTrail, rng: random.Random, i: int) -> None:
    """One event of a random kind."""
    kind = rng.randrange(9)
    if kind == 0:
        trail.log_data_access("customers", rng.sample(["age", "income", "zip"], rng.randrange(4)),
                              rng.randrange(10**6), rng.choice([None, "scoring"]))
    elif kind == 1:
        trail.log_model_inference("m1", f"row-{i}", {"label": rng.random() > 0.5}, rng.choice([None, rng.random()]))
    elif kind == 2:
        trail.log_data_transformation("anonymize", "raw", "clean", {"k": rng.randrange(9)})
    elif kind == 3:
        trail.log_model_training("xgb", "customers", {"depth": 6}, {"auc": 0.9}, {"epsilon": 1.5})
    elif kind == 4:
        trail.log_compliance_check("consent", "GDPR", rng.random() > 0.3, {"checked": i})
    elif kind == 5:
        trail.log_user_request("erasure", f"u{i}", None, "received")
    elif kind == 6:
        trail.log_error("ValueError", "bad row ✗", {"row": i})
    elif kind == 7:
        trail.log_event("model.deployed", {"stage": "prod", "n": -i}, user="ops")
    else:
        trail.log_data_access("ledger", [], 0, "audit", user="bob")


def log_function_calls(harness: Harness, calls: int) -> None:
    """Operations of the audit_function decorator (function_call / function_return events)."""
    options = harness.options()

    @audit_function("scaled", record_values=("factor", "return"), **options)
    def scaled(values: list[int], factor: int) -> list[int]:
        return [v * factor for v in values]

    for n in range(calls):
        scaled([1, 2, n], factor=n)


# -- Parquet surgery ---------------------------------------------------------------------------


def micros(value: Any) -> int:
    """Microseconds since the epoch of a timestamp read from Parquet."""
    return (value - EPOCH) // dt.timedelta(microseconds=1)


def event_hash(row: dict[str, Any]) -> str:
    """The hash a producer would give this row's content (encoded per the current schema if its version is unknown)."""
    record = {name: row[name] for name in EVENT_FIELDS}
    for name in TIMESTAMP_FIELDS:
        record[name] = micros(record[name])
    version = record["schema_version"] if record["schema_version"] in known_versions() else SCHEMA_VERSION
    return hashlib.sha256(canonical_bytes(record, version)).hexdigest()


@dataclass
class LakeRows:
    """Every row of a lake's data files, editable, written back in place (an emptied file leaves the table)."""

    lake: Lake
    uris: dict[str, str] = field(default_factory=dict)  # Delta path -> file
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    originals: dict[str, list[str]] = field(default_factory=dict)  # Delta path -> event ids it held
    schemas: dict[str, pa.Schema] = field(default_factory=dict)

    @classmethod
    def load(cls, log_dir: Path) -> LakeRows:
        """Read the newest version of the lake under log_dir."""
        lake = Lake(log_dir)
        rows = cls(lake)
        for entry in lake.snapshot().files:
            table = pq.read_table(entry.uri)
            rows.uris[entry.path] = entry.uri
            rows.tables[entry.path] = table.to_pylist()
            rows.originals[entry.path] = table.column("event_id").to_pylist()
            rows.schemas[entry.path] = table.schema
        return rows

    def all(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(file, row) of every row."""
        for path, rows in self.tables.items():
            for row in rows:
                yield path, row

    def operations(self) -> dict[str, list[tuple[str, dict[str, Any]]]]:
        """Rows of every operation, in seq order."""
        ops: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for path, row in self.all():
            ops.setdefault(row["operation_id"], []).append((path, row))
        return {op: sorted(rows, key=lambda pr: pr[1]["seq"]) for op, rows in ops.items()}

    def remove(self, predicate: Callable[[dict[str, Any]], bool]) -> list[tuple[str, dict[str, Any]]]:
        """Drop the rows the predicate selects; returns them."""
        removed = []
        for path, rows in self.tables.items():
            removed += [(path, r) for r in rows if predicate(r)]
            self.tables[path] = [r for r in rows if not predicate(r)]
        return removed

    def save(self, *, drop_empty: bool = True) -> None:
        """Write every file back in place; an emptied file is deleted from the table by a Delta commit.

        The commit comes first: delta-rs reads files by the sizes its log recorded, which a file
        rewritten in place no longer has.
        """
        emptied = [event_id for path, rows in self.tables.items() if not rows and drop_empty
                   for event_id in self.originals[path]]
        if emptied:
            listed = ", ".join("'" + event_id + "'" for event_id in emptied)
            DeltaTable(self.lake.uri).delete(f"event_id IN ({listed})")
        for path, rows in self.tables.items():
            if rows or not drop_empty:
                pq.write_table(pa.Table.from_pylist(rows, schema=self.schemas[path]), self.uris[path])


def copy_lake(source: Path, target: Path) -> Path:
    """A copy of a log directory's lake (what an auditor is handed)."""
    shutil.copytree(source / "lake", target / "lake")
    return target


def checkpoint_json(log_dir: Path) -> list[dict[str, Any]]:
    """Every checkpoint record stored in the lake, in order."""
    directory = log_dir / "lake" / "_checkpoints"
    return [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]
