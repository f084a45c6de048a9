"""The lake: idempotent commits, orphan clean-up, compaction that keeps every event exactly once."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from conftest import Harness
from secureml.audit import AuditTrail, count_events, get_audit_logs
from secureml.audit.lake import COMPACTION_FANOUT, Lake
from secureml.materializer import materialize


def _many_small_commits(harness: Harness, commits: int) -> None:
    for i in range(commits):
        with AuditTrail(f"op-{i % 3}", **harness.options()) as trail:
            trail.log_model_inference("m", f"r{i}", i, 0.5)
        materialize(harness.log_dir)


def test_compaction_keeps_small_files_in_check(embedded: Harness) -> None:
    """Dozens of small commits end as a few files, still holding every event exactly once, sorted."""
    _many_small_commits(embedded, 3 * COMPACTION_FANOUT)
    lake = Lake(embedded.log_dir)
    files = lake.snapshot().files
    assert len(files) < COMPACTION_FANOUT
    assert any(f.level >= 1 for f in files)
    on_disk = sorted(p.relative_to(lake.root).as_posix() for p in lake.events_dir.glob("*/*.parquet"))
    assert on_disk == sorted(f.path for f in files), "superseded files must leave the lake directory"
    table = get_audit_logs(log_dir=embedded.log_dir, output="arrow")
    assert table.num_rows == 3 * COMPACTION_FANOUT * 3
    assert len(set(table["event_id"].to_pylist())) == table.num_rows
    merged = next(f for f in files if f.level >= 1)
    rows = pq.read_table(lake.root / merged.path, columns=["operation_name", "timestamp"]).to_pylist()
    assert rows == sorted(rows, key=lambda r: (r["operation_name"], r["timestamp"]))


def test_closed_day_becomes_one_file(embedded: Harness) -> None:
    """A date partition before today is merged into a single file."""
    _many_small_commits(embedded, 3)
    lake = Lake(embedded.log_dir)
    assert len(lake.snapshot().files) == 3
    merged = lake.compact(today="2999-01-01")
    assert merged == 3 and len(lake.snapshot().files) == 1
    assert count_events(embedded.log_dir) == 9


def test_replayed_commit_adds_nothing(embedded: Harness) -> None:
    """Committing the same source range twice stores its rows once."""
    _many_small_commits(embedded, 1)
    lake = Lake(embedded.log_dir)
    manifest = lake.snapshot()
    (source, position), = manifest.positions.items()
    table = get_audit_logs(log_dir=embedded.log_dir, output="arrow")
    assert lake.commit({source: table}, {source: (0, position)}) == 0
    assert count_events(embedded.log_dir) == 3


def test_orphan_files_are_removed(embedded: Harness) -> None:
    """A Parquet file that no manifest names (a crash between write and commit) is deleted."""
    _many_small_commits(embedded, 1)
    lake = Lake(embedded.log_dir)
    live = lake.root / lake.snapshot().files[0].path
    orphan = live.with_name("log.orphan-00000000000000000000-00000000000000000001.parquet")
    orphan.write_bytes(live.read_bytes())
    assert lake.remove_orphans() == 1 and not orphan.exists() and live.exists()


def test_catalog_views_read_the_lake(embedded: Harness, tmp_path: Path) -> None:
    """The DuckDB catalog and the manifest agree on what the lake holds."""
    _many_small_commits(embedded, 2)
    con = duckdb.connect(str(embedded.log_dir / "audit.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM events").fetchone()[0] == 6
        assert con.execute("SELECT count(*) FROM operations WHERE status = 'completed'").fetchone()[0] == 2
    finally:
        con.close()
    manifest = json.loads((embedded.log_dir / "lake" / "_manifest.json").read_text())
    assert sum(f["rows"] for f in manifest["files"]) == 6
