"""The Delta lake: exactly-once commits, every reader on exactly one version, compaction, time travel,
auditors' read-only copies, the duckdb CLI catalog, and migration from the previous format."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from conftest import REPO, Harness, run_cli
from secureml.audit import AuditTrail, count_events, get_audit_logs
from secureml.audit import trail as trail_module
from secureml.integrity import verify
from secureml.lake import table as table_module
from secureml.lake.catalog import catalog_state, ensure_catalog
from secureml.lake.table import COMPACT_SMALL_FILES, Lake
from secureml.materializer import materialize

DUCKDB_CLI = Path(sys.executable).with_name("duckdb")


def _many_small_commits(log_dir: Path, commits: int, events: int = 1) -> None:
    for i in range(commits):
        with AuditTrail(f"op-{i % 3}", log_dir=log_dir, bootstrap_servers="") as trail:
            for j in range(events):
                trail.log_model_inference("m", f"r{i}-{j}", j, 0.5)
        materialize(log_dir)


def _cli_count(catalog: Path) -> int:
    """``duckdb log_dir/audit.duckdb "select count(*) from events"``, as a user types it."""
    out = subprocess.run([str(DUCKDB_CLI), "-csv", "-noheader", str(catalog), "select count(*) from events"],
                         capture_output=True, text=True, check=True, timeout=60)
    return int(out.stdout.strip())


def _tree(path: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under a directory: what 'wrote nothing' is checked against."""
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*")}


def test_each_commit_records_the_positions_it_consumed(embedded: Harness) -> None:
    """Every materialised segment's next byte is a Delta app transaction of the commit that stored its rows."""
    _many_small_commits(embedded.log_dir, 2)
    table = DeltaTable(str(embedded.log_dir / "lake" / "events"))
    segments = sorted((embedded.log_dir / "log").glob("*.seg"))
    assert len(segments) == 1
    assert table.transaction_version(f"log/{segments[0].name}") == segments[0].stat().st_size
    assert table.to_pyarrow_table().num_rows == 6
    assert not (embedded.log_dir / "lake" / "_manifest.json").exists()


def test_a_range_starting_in_a_files_last_millisecond_finds_its_last_events(
    embedded: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Delta keeps a file's max time to the millisecond: events up to 999 us past it are not pruned away."""
    second = 1_795_000_000_000_000  # a whole second: every event below lies within its first millisecond
    clock = iter(range(second + 100, second + 1_000, 100))
    monkeypatch.setattr(trail_module, "now_micros", lambda: next(clock))
    with AuditTrail("op", log_dir=embedded.log_dir, bootstrap_servers="") as trail:
        for i in range(5):
            trail.log_model_inference("m", f"r{i}", i, 0.5)
    materialize(embedded.log_dir)
    stored = get_audit_logs(log_dir=embedded.log_dir)
    assert len(stored) == 7 and all(
        dt.datetime.fromisoformat(e["timestamp"]).timestamp() * 1_000_000 < second + 1_000 for e in stored)
    last_inference = stored[-2]
    assert last_inference["event_type"] == "model_inference"
    found = get_audit_logs(log_dir=embedded.log_dir, start_time=last_inference["timestamp"])
    assert [e["event_type"] for e in found] == ["model_inference", "audit_closed"]


def test_replayed_commit_adds_nothing(embedded: Harness) -> None:
    """Committing the same source range again stores its rows once: the app transaction says it is held."""
    _many_small_commits(embedded.log_dir, 1)
    lake = Lake(embedded.log_dir)
    segment = next((embedded.log_dir / "log").glob("*.seg"))
    source = f"log/{segment.name}"
    rows = get_audit_logs(log_dir=embedded.log_dir, output="arrow")
    version = lake.snapshot().version
    assert lake.commit({source: rows}, {source: (0, segment.stat().st_size)}) == 0
    assert lake.snapshot().version == version, "nothing to commit means no new version"
    assert count_events(embedded.log_dir) == 3


def _commit_same_batches(uri: str, batches: list[tuple[int, int]], rows_path: str) -> None:
    """Commit the same source ranges as another process does, at the same time (a zombie and its successor)."""
    lake = Lake(Path(rows_path).parent, uri=uri)
    table = pa.ipc.open_file(rows_path).read_all()
    for start, nxt in batches:
        part = table.filter(pa.compute.and_(pa.compute.greater_equal(table["source_offset"], start),
                                            pa.compute.less(table["source_offset"], nxt)))
        lake.commit({"kafka-test/0": part}, {"kafka-test/0": (start, nxt)})


def test_concurrent_writers_of_one_source_store_each_row_once(embedded: Harness, tmp_path: Path) -> None:
    """Four processes committing the same positions of one source at once: the txn version fences all but one."""
    _many_small_commits(embedded.log_dir, 1, events=200)
    rows = get_audit_logs(log_dir=embedded.log_dir, output="arrow")
    rows = rows.set_column(rows.schema.get_field_index("source"), "source",
                           pa.array(["kafka-test/0"] * rows.num_rows, pa.large_string()))
    rows = rows.set_column(rows.schema.get_field_index("source_offset"), "source_offset",
                           pa.array(range(rows.num_rows), pa.int64()))
    rows_path = tmp_path / "rows.arrow"
    with pa.ipc.new_file(rows_path, rows.schema) as writer:
        writer.write_table(rows)
    uri = str(tmp_path / "shared-lake")
    batches = [(start, min(start + 40, rows.num_rows)) for start in range(0, rows.num_rows, 40)]
    ctx = multiprocessing.get_context("spawn")  # delta-rs must never run in a forked child
    workers = [ctx.Process(target=_commit_same_batches, args=(uri, batches, str(rows_path))) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(180)
        assert worker.exitcode == 0
    stored = DeltaTable(uri).to_pyarrow_table(columns=["source_offset", "event_id"])
    assert stored.num_rows == rows.num_rows == 202
    assert sorted(stored["source_offset"].to_pylist()) == list(range(rows.num_rows))
    assert DeltaTable(uri).transaction_version("kafka-test/0") == rows.num_rows


def test_closed_day_is_compacted_into_one_file_with_exact_counts_meanwhile(embedded: Harness) -> None:
    """While optimize rewrites a partition, get_audit_logs, the catalog, Polars and pyarrow all count exactly."""
    _many_small_commits(embedded.log_dir, 12, events=20)
    expected = 12 * 22
    lake = Lake(embedded.log_dir)
    assert len(lake.snapshot().files) == 12
    counts: list[tuple[str, int]] = []
    stop = threading.Event()

    def read_all_the_time() -> None:
        while not stop.is_set():
            counts.append(("get_audit_logs", get_audit_logs(log_dir=embedded.log_dir, output="arrow").num_rows))
            counts.append(("polars", pl.read_delta(lake.uri).height))
            counts.append(("pyarrow", DeltaTable(lake.uri).to_pyarrow_dataset().count_rows()))
            counts.append(("catalog", _cli_count(embedded.log_dir / "audit.duckdb")))

    reader = threading.Thread(target=read_all_the_time)
    reader.start()
    try:
        merged = lake.compact_all(today="2999-01-01")
        ensure_catalog(lake)
        time.sleep(0.5)
    finally:
        stop.set()
        reader.join(60)
    assert merged == 12
    assert len(lake.snapshot().files) == 1
    assert {name for name, _ in counts} == {"get_audit_logs", "polars", "pyarrow", "catalog"}
    assert [c for c in counts if c[1] != expected] == []
    table = get_audit_logs(log_dir=embedded.log_dir, output="arrow")
    assert len(set(table["event_id"].to_pylist())) == expected


def _compact_at_once(log_dir: str, barrier: Any) -> None:
    """Compact the lake the moment the other process does."""
    lake = Lake(log_dir)
    barrier.wait()
    lake.compact_all(today="2999-01-01")


def test_two_instances_compacting_at_once_keep_every_row_once(embedded: Harness) -> None:
    """Two processes optimizing one partition at the same moment: the maintenance lease lets one through.

    delta-rs lets two racing optimize commits both succeed, each adding its own copy of the rows.
    """
    _many_small_commits(embedded.log_dir, 6, events=10)
    expected = 6 * 12
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(3)
    workers = [ctx.Process(target=_compact_at_once, args=(str(embedded.log_dir), barrier)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    lake = Lake(embedded.log_dir)
    assert len(lake.snapshot().files) == 1
    assert lake.snapshot().rows == expected
    assert pl.read_delta(lake.uri).height == expected


def test_todays_partition_is_merged_once_small_files_pile_up(embedded: Harness) -> None:
    """Small commits into today's partition pile up to a limit, then one optimize commit merges them."""
    _many_small_commits(embedded.log_dir, COMPACT_SMALL_FILES - 1)
    lake = Lake(embedded.log_dir)
    assert len(lake.snapshot().files) == COMPACT_SMALL_FILES - 1
    _many_small_commits(embedded.log_dir, 1)
    assert len(lake.snapshot().files) == 1
    assert count_events(embedded.log_dir) == COMPACT_SMALL_FILES * 3


def test_compaction_bins_small_files_and_leaves_files_past_the_target_alone(
    embedded: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Today's small files merge into a bin of up to the target size; a larger file is never rewritten."""
    _many_small_commits(embedded.log_dir, 1, events=3000)
    lake = Lake(embedded.log_dir)
    (big,) = lake.snapshot().files
    target = Path(big.uri).stat().st_size - 1
    _many_small_commits(embedded.log_dir, 6)
    monkeypatch.setattr(table_module, "TARGET_FILE_BYTES", target)
    monkeypatch.setattr(table_module, "SMALL_FILE_BYTES", target // 2)
    monkeypatch.setattr(table_module, "COMPACT_SMALL_FILES", 6)
    assert lake.compact_all() == 6
    files = lake.snapshot().files
    assert big in files and len(files) == 2
    assert Path(next(f for f in files if f != big).uri).stat().st_size <= target
    assert lake.compact() == 0  # what compaction made is not due again
    assert lake.snapshot().rows == count_events(embedded.log_dir) == 3002 + 6 * 3


def test_only_small_files_make_todays_partition_due(embedded: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Today's partition is compacted once small files pile up; files at size, however many, never make it due."""
    monkeypatch.setattr(table_module, "COMPACT_SMALL_FILES", 4)
    monkeypatch.setattr(table_module, "SMALL_FILE_BYTES", 1)  # every file is at size
    _many_small_commits(embedded.log_dir, 5)
    lake = Lake(embedded.log_dir)
    assert not lake.compaction_due()
    assert lake.compact() == 0 and len(lake.snapshot().files) == 5
    monkeypatch.setattr(table_module, "SMALL_FILE_BYTES", 2**30)  # every file is small
    assert lake.compaction_due()
    assert lake.compact() == 5 and len(lake.snapshot().files) == 1
    assert not lake.compaction_due()


def test_a_file_written_but_never_committed_is_never_counted(embedded: Harness) -> None:
    """A crash between writing a data file and committing it leaves an orphan no reader counts."""
    _many_small_commits(embedded.log_dir, 2)
    lake = Lake(embedded.log_dir)
    live = Path(lake.snapshot().files[0].uri)
    orphan = live.with_name("part-00000-00000000-0000-0000-0000-000000000000-c000.zstd.parquet")
    shutil.copy(live, orphan)  # what a SIGKILL after the write, before the commit, leaves behind
    assert count_events(embedded.log_dir) == 6
    assert get_audit_logs(log_dir=embedded.log_dir, output="arrow").num_rows == 6
    assert pl.read_delta(lake.uri).height == 6
    assert DeltaTable(lake.uri).to_pyarrow_table().num_rows == 6
    assert _cli_count(embedded.log_dir / "audit.duckdb") == 6
    assert Lake(embedded.log_dir).vacuum(retention_hours=0) >= 1  # vacuum clears what no version names
    assert not orphan.exists()


def test_catalog_is_rebuilt_when_missing_empty_or_stale(embedded: Harness) -> None:
    """The duckdb CLI catalog names the table version it shows and is rebuilt whenever that is not the newest."""
    _many_small_commits(embedded.log_dir, 1)
    catalog = embedded.log_dir / "audit.duckdb"
    lake = Lake(embedded.log_dir)
    assert catalog_state(catalog) == (lake.uri, lake.snapshot().version)
    catalog.unlink()
    _many_small_commits(embedded.log_dir, 1)
    assert _cli_count(catalog) == 6
    catalog.write_bytes(b"")
    _many_small_commits(embedded.log_dir, 1)
    assert _cli_count(catalog) == 9
    stale = catalog_state(catalog)
    with AuditTrail("late", log_dir=embedded.log_dir) as trail:
        trail.log_model_inference("m", "x", 1, 0.5)
    materialize(embedded.log_dir)
    assert catalog_state(catalog) != stale
    assert _cli_count(catalog) == 12
    con = duckdb.connect(str(catalog), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM operations WHERE status = 'completed'").fetchone()[0] == 4
    finally:
        con.close()


def test_time_travel_returns_an_earlier_state(embedded: Harness) -> None:
    """as_of a version or a time gives what the lake held then, from get_audit_logs, connect and the CLI."""
    _many_small_commits(embedded.log_dir, 1)
    first = Lake(embedded.log_dir).snapshot().version
    between = dt.datetime.now(dt.UTC)
    time.sleep(0.05)
    _many_small_commits(embedded.log_dir, 2)
    assert get_audit_logs(log_dir=embedded.log_dir, output="arrow").num_rows == 9
    assert get_audit_logs(log_dir=embedded.log_dir, output="arrow", as_of=first).num_rows == 3
    assert len(get_audit_logs(log_dir=embedded.log_dir, as_of=between)) == 3
    from secureml.audit import connect

    assert connect(embedded.log_dir, as_of=first).execute("SELECT count(*) FROM events").fetchone()[0] == 3
    out = run_cli("query", "--log-dir", str(embedded.log_dir), "--as-of", str(first), "--format", "json")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count('"event_id"') == 3
    bad = run_cli("query", "--log-dir", str(embedded.log_dir), "--as-of", "999")
    assert bad.returncode == 1 and "no version 999" in bad.stderr and "Traceback" not in bad.stderr


def test_vacuum_keeps_what_recent_versions_and_time_travel_need(embedded: Harness) -> None:
    """After compaction, vacuum with the default retention deletes nothing a recent version reads."""
    _many_small_commits(embedded.log_dir, 1)
    lake = Lake(embedded.log_dir)
    first = lake.snapshot().version
    _many_small_commits(embedded.log_dir, 2)
    lake.compact_all(today="2999-01-01")
    assert lake.vacuum() == 0
    assert get_audit_logs(log_dir=embedded.log_dir, output="arrow", as_of=first).num_rows == 3
    assert verify(embedded.log_dir, as_of=first).ok


def test_a_read_only_copy_queries_and_verifies_and_writes_nothing(
    embedded: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An auditor's copy of the lake, elsewhere and read-only, answers queries and verifies, writing nothing."""
    _many_small_commits(embedded.log_dir, 3)
    public_key = Path(os.environ["SECUREML_AUDIT_SIGNING_KEY"]).with_name("signing_key.pub.pem")
    copy = tmp_path / "auditor" / "audit_logs"
    shutil.copytree(embedded.log_dir / "lake", copy / "lake")
    shutil.rmtree(embedded.log_dir)  # the original is gone: nothing may point back at it
    for path in [copy, *copy.rglob("*")]:
        path.chmod(0o500 if path.is_dir() else 0o400)
    before = _tree(copy)
    monkeypatch.setenv("SECUREML_AUDIT_SIGNING_KEY", str(tmp_path / "no-key-here" / "signing_key.pem"))
    assert get_audit_logs(log_dir=copy, output="arrow").num_rows == 9
    from secureml.audit import connect

    assert connect(copy).execute("SELECT count(DISTINCT operation_id) FROM events").fetchone()[0] == 3
    result = verify(copy, public_key=public_key)
    assert result.ok and result.events == 9, result.findings
    cli = run_cli("verify", "--log-dir", str(copy), "--public-key", str(public_key))
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert _tree(copy) == before
    assert not (tmp_path / "no-key-here").exists()
    catalog = tmp_path / "auditor" / "audit.duckdb"
    out = run_cli("catalog", "--log-dir", str(copy), "--output", str(catalog))
    assert out.returncode == 0, out.stderr
    assert _cli_count(catalog) == 9, "the duckdb CLI reads the copy through a catalog written beside it"
    assert _tree(copy) == before


def test_a_lake_of_the_previous_format_migrates_and_verifies(tmp_path: Path) -> None:
    """A manifest lake written by the first wave converts to Delta; verify passes with its old checkpoints."""
    with tarfile.open(REPO / "tests" / "data" / "previous-format-lake.tar.gz") as archive:
        archive.extractall(tmp_path, filter="data")
    log_dir = tmp_path / "logs"
    public_key = tmp_path / "previous-format.pub.pem"
    refused = run_cli("query", "--log-dir", str(log_dir))
    assert refused.returncode == 1 and "secureml-audit migrate" in refused.stderr
    out = run_cli("migrate", "--log-dir", str(log_dir))
    assert out.returncode == 0, out.stderr
    assert "migrated 129 events" in out.stderr
    assert not (log_dir / "lake" / "_manifest.json").exists()
    assert not list((log_dir / "lake" / "events").glob("*/log.*.parquet")), "the old files are gone"
    assert DeltaTable(str(log_dir / "lake" / "events")).to_pyarrow_table().num_rows == 129
    result = verify(log_dir, public_key=public_key)
    assert result.ok, [f.message for f in result.errors]
    assert len(result.checkpoints) == 3 and all(c.roots_match for c in result.checkpoints)
    assert materialize(log_dir).events == 0, "the migrated positions say the log is fully materialised"
    assert count_events(log_dir) == 129
    again = run_cli("migrate", "--log-dir", str(log_dir))
    assert again.returncode == 0 and "nothing to migrate" in again.stderr


def test_a_reader_sees_another_writers_commit_at_its_next_snapshot(embedded: Harness) -> None:
    """A Lake that read the table (and skips re-listing an unchanged one) sees a commit made through another Lake."""
    _many_small_commits(embedded.log_dir, 1)
    reader = Lake(embedded.log_dir)
    first = reader.snapshot()
    assert reader.snapshot().version == first.version  # unchanged: the same version, its files listed once
    _many_small_commits(embedded.log_dir, 1)
    after = reader.snapshot()
    assert after.version is not None and first.version is not None and after.version > first.version
    assert Lake(embedded.log_dir).snapshot().rows == after.rows > first.rows
