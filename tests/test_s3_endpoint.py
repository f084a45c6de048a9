"""delta-rs (deltalake) against the local S3 endpoint of scripts/s3-local, the way the lake uses it.

The s3_endpoint and s3_lake fixtures come from support.s3, registered in tests/conftest.py.
Real endpoint, real processes, no mocks. The fence tests race two writer processes (spawned:
delta-rs panics in a forked child) that both loaded the table at version N, so both commit
version N+1; exactly one may win.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError
from support.s3 import CommitGate, S3Lake

APP_ID = "src"
RACE_TIMEOUT_S = 180


def _rows(ids: list[int], writer: str = "seed") -> pa.Table:
    """A small batch of audit-like rows."""
    return pa.table({"id": pa.array(ids, pa.int64()), "writer": pa.array([writer] * len(ids), pa.string())})


def _racer(
    uri: str,
    options: dict[str, str] | None,
    writer: str,
    txn_version: int,
    max_commit_retries: int | None,
    barrier: Any,
    results: Any,
) -> None:
    """Load the table, wait until the other racer has loaded it too, then append one row (in a spawned process)."""
    report: dict[str, Any] = {"writer": writer, "txn_version": txn_version}
    try:
        table = DeltaTable(uri, storage_options=options)
        report["read_version"] = table.version()
        barrier.wait(timeout=60)
        write_deltalake(
            table,
            _rows([100 + txn_version], writer),
            mode="append",
            commit_properties=CommitProperties(
                max_commit_retries=max_commit_retries,
                app_transactions=[Transaction(app_id=APP_ID, version=txn_version)],
            ),
        )
        report.update(outcome="committed", version=table.version())
    except CommitFailedError as exc:
        report.update(outcome="CommitFailedError", error=f"{type(exc).__module__}.{type(exc).__qualname__}",
                      message=str(exc))
    except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
        report.update(outcome="unexpected", error=f"{type(exc).__module__}.{type(exc).__qualname__}",
                      message=str(exc))
    results.put(report)


def _race(uri: str, options: dict[str, str] | None, max_commit_retries: int | None = None) -> list[dict[str, Any]]:
    """Run two racing writer processes against one table and return their reports, winner first."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_racer, args=(uri, options, name, txn, max_commit_retries, barrier, results), daemon=True)
        for name, txn in (("writer-a", 10), ("writer-b", 20))
    ]
    for proc in procs:
        proc.start()
    reports: list[dict[str, Any]] = []
    deadline = time.monotonic() + RACE_TIMEOUT_S
    try:
        while len(reports) < len(procs):
            try:
                reports.append(results.get(timeout=1))
            except queue.Empty:
                # A racer that died without reporting (e.g. a crash while importing) ends the wait early.
                exited = all(proc.exitcode is not None for proc in procs)
                if exited or time.monotonic() > deadline:
                    pytest.fail(f"racers did not both report (got {reports}); exit codes "
                                f"{[proc.exitcode for proc in procs]}; their stderr is in the captured output")
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():  # only ever the racers this test started
                proc.kill()
                proc.join(timeout=10)
    return sorted(reports, key=lambda r: r["outcome"] != "committed")


def _assert_exactly_one_winner(uri: str, options: dict[str, str] | None, reports: list[dict[str, Any]]) -> None:
    """Both racers read version 0, one committed version 1, the other got CommitFailedError."""
    assert [r.get("read_version") for r in reports] == [0, 0], reports
    assert [r["outcome"] for r in reports] == ["committed", "CommitFailedError"], reports
    winner, loser = reports
    assert winner["version"] == 1, reports
    assert loser["error"] == "_internal.CommitFailedError", reports
    table = DeltaTable(uri, storage_options=options)
    assert table.version() == 1
    assert table.transaction_version(APP_ID) == winner["txn_version"]
    assert sorted(table.to_pyarrow_table()["writer"].to_pylist()) == sorted(["seed"] * 3 + [winner["writer"]])


def test_write_then_read_back_over_s3(s3_lake: S3Lake) -> None:
    """write_deltalake to an s3:// URI is read back whole by DeltaTable, whose files are s3:// URIs."""
    rows = _rows([1, 2, 3])
    write_deltalake(s3_lake.uri, rows, storage_options=s3_lake.storage_options)

    table = DeltaTable(s3_lake.uri, storage_options=s3_lake.storage_options)

    assert table.version() == 0
    assert table.to_pyarrow_table().sort_by("id").equals(rows)
    uris = table.file_uris()
    assert uris
    assert all(uri.startswith(f"{s3_lake.uri}/") and uri.endswith(".parquet") for uri in uris), uris


def test_app_transaction_version_is_recorded_over_s3(s3_lake: S3Lake) -> None:
    """An append committed with an app transaction makes transaction_version(app_id) return its version."""
    write_deltalake(s3_lake.uri, _rows([1]), storage_options=s3_lake.storage_options)
    write_deltalake(
        s3_lake.uri,
        _rows([2]),
        mode="append",
        storage_options=s3_lake.storage_options,
        commit_properties=CommitProperties(app_transactions=[Transaction(app_id=APP_ID, version=5)]),
    )

    table = DeltaTable(s3_lake.uri, storage_options=s3_lake.storage_options)

    assert table.version() == 1
    assert table.transaction_version(APP_ID) == 5
    assert table.transaction_version("another-source") is None


def test_fence_on_s3_the_endpoint_rejects_the_second_commit(s3_lake: S3Lake) -> None:
    """Two writers PUT commit version 1 at once: the endpoint accepts one, the other gets CommitFailedError."""
    write_deltalake(s3_lake.uri, _rows([1, 2, 3]), storage_options=s3_lake.storage_options)

    with CommitGate(s3_lake.endpoint, version=1) as gate:
        gated = s3_lake.via(gate.endpoint)
        reports = _race(gated.uri, gated.storage_options)

    # Both commit PUTs of version 1 reached the endpoint together; its If-None-Match check decided.
    assert not gate.timed_out, reports
    assert sorted(gate.statuses) == [200, 412], (gate.statuses, reports)
    _assert_exactly_one_winner(s3_lake.uri, s3_lake.storage_options, reports)
    assert "Concurrent transaction" in reports[1]["message"], reports


def test_fence_on_s3_without_retries_fails_on_the_rejected_put(s3_lake: S3Lake) -> None:
    """With max_commit_retries=0 the writer whose commit PUT the endpoint rejected fails with CommitFailedError."""
    write_deltalake(s3_lake.uri, _rows([1, 2, 3]), storage_options=s3_lake.storage_options)

    with CommitGate(s3_lake.endpoint, version=1) as gate:
        gated = s3_lake.via(gate.endpoint)
        reports = _race(gated.uri, gated.storage_options, max_commit_retries=0)

    assert not gate.timed_out, reports
    assert sorted(gate.statuses) == [200, 412], (gate.statuses, reports)
    _assert_exactly_one_winner(s3_lake.uri, s3_lake.storage_options, reports)


def test_fence_on_s3_free_race(s3_lake: S3Lake) -> None:
    """Two writers that loaded version 0 and commit at once, unhindered: exactly one wins, on S3."""
    write_deltalake(s3_lake.uri, _rows([1, 2, 3]), storage_options=s3_lake.storage_options)

    reports = _race(s3_lake.uri, s3_lake.storage_options)

    _assert_exactly_one_winner(s3_lake.uri, s3_lake.storage_options, reports)


def test_fence_on_a_local_directory(tmp_path: Path) -> None:
    """Two writers that loaded version 0 and commit at once: exactly one wins, on a local directory too."""
    uri = str(tmp_path / "lake" / "events")
    write_deltalake(uri, _rows([1, 2, 3]))

    reports = _race(uri, None)

    _assert_exactly_one_winner(uri, None, reports)


def test_duckdb_scans_the_s3_table_through_a_pyarrow_dataset(s3_lake: S3Lake) -> None:
    """DuckDB counts and filters an S3 Delta table handed over as DeltaTable.to_pyarrow_dataset()."""
    write_deltalake(s3_lake.uri, _rows([1, 2, 3]), storage_options=s3_lake.storage_options)
    write_deltalake(s3_lake.uri, _rows([4, 5], "late"), mode="append", storage_options=s3_lake.storage_options)
    ds = DeltaTable(s3_lake.uri, storage_options=s3_lake.storage_options).to_pyarrow_dataset()  # noqa: F841

    con = duckdb.connect()

    assert con.sql("select count(*) from ds").fetchall() == [(5,)]
    assert con.sql("select sum(id) from ds where writer = 'late'").fetchall() == [(9,)]
