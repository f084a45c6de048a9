"""Bench: every page of the audit explorer (`secureml-audit ui`) over a 10M-event lake, p50 and p99.

Builds the lake as bench_query.py does (compacted, one sorted commit per day), adds one
audit_started and one audit_closed event per operation, data-subject requests and an alerts
record, then starts `secureml-audit ui --no-verify` (the integrity page lists checkpoints; a
background verify of 10M events is `bench_verify.py`'s business) and times each page over
HTTP: p50/p99 warm, and the first request (whole-lake reads are kept per lake state, so the
first page after each change of the lake pays for them). Baselines in the same run: a static
asset from the same server (the HTTP floor) and `get_audit_logs` of one page of one operation
in this process (the query layer's floor). With ``--commits N`` it then appends N small commits
to the lake (one operation each, as a materializer would) and times the first page after each:
what a page pays for the lake having changed (use it on a lake of its own: it writes into it).

    .venv/bin/python bench/bench_ui.py [--events 10000000] [--requests 30] [--lake DIR] [--commits N]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow as pa
from bench_query import DAY_US, START_US, build_lake
from deltalake import write_deltalake

from secureml.audit import get_audit_logs
from secureml.lake.rows import PARTITION_KEY, lake_schema, table_schema, with_partition
from secureml.lake.table import WRITER, Lake

OPERATIONS = 20_000  # build_lake's default: op-0 ... op-19999
DAYS = 30


def _table(columns: dict[str, list[object]]) -> pa.Table:
    """Rows of the lake's schema from the given columns (every other column null)."""
    schema = lake_schema()
    n = len(next(iter(columns.values())))
    arrays = [pa.array(columns[f.name], f.type) if f.name in columns else pa.nulls(n, f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def add_operation(log_dir: Path, number: int) -> str:
    """One more operation (its start and close, now) as one commit of its own; returns its id."""
    now = int(time.time() * 1_000_000)
    op = f"late-{number}-{now}"
    rows = [{"event_id": f"{op}:{seq}", "seq": seq, "event_type": kind, "timestamp": now + seq, "status": status,
             "event_count": 2 if seq else None} for seq, kind, status in ((0, "audit_started", None),
                                                                           (1, "audit_closed", "completed"))]
    columns = {key: [r[key] for r in rows] for key in rows[0]}
    table = _table({**columns, "schema_version": [1, 1], "operation_id": [op, op], "operation_name": ["late", "late"],
                    "operation_start": [now, now], "level": [20, 20], "user": ["user_1", "user_1"],
                    "regulations": [["GDPR"], ["GDPR"]], "context": ["{}", "{}"], "producer_host": ["h", "h"],
                    "producer_pid": [1, 1], "producer_version": ["0.1.0", "0.1.0"], "prev_hash": ["", "0" * 64],
                    "hash": ["1" * 64, "1" * 64], "source": ["bench/late", "bench/late"],
                    "source_offset": [2 * number, 2 * number + 1]})
    write_deltalake(Lake(log_dir).uri, with_partition(table).cast(table_schema()), mode="append",
                    partition_by=[PARTITION_KEY], writer_properties=WRITER)
    return op


def add_operations_and_requests(log_dir: Path, requests: int) -> None:
    """One audit_started (seq 0) and audit_closed per operation, and `requests` user requests: one commit."""
    step = DAY_US * DAYS // OPERATIONS
    rows: dict[str, list[object]] = {k: [] for k in (
        "schema_version", "event_id", "operation_id", "operation_name", "operation_start", "seq", "event_type",
        "level", "timestamp", "user", "regulations", "context", "producer_host", "producer_pid", "producer_version",
        "prev_hash", "hash", "source", "source_offset", "status", "event_count", "request_type", "user_id",
        "details")}

    def add(op: int, seq: int, kind: str, ts: int, **payload: object) -> None:
        values = {"schema_version": 1, "event_id": f"op-{op}:{seq}:{kind}", "operation_id": f"op-{op}",
                  "operation_name": f"model_{op & 63}", "operation_start": START_US + op * step, "seq": seq,
                  "event_type": kind, "level": 20, "timestamp": ts, "user": f"user_{op % 500}",
                  "regulations": ["GDPR"] if op % 3 else ["CCPA"], "context": "{}", "producer_host": "h",
                  "producer_pid": 1, "producer_version": "0.1.0", "prev_hash": "0" * 64, "hash": "1" * 64,
                  "source": "bench/1", "source_offset": len(rows["seq"])}
        for key in rows:
            rows[key].append(payload.get(key, values.get(key)))

    for op in range(OPERATIONS):
        start = START_US + op * step
        add(op, 0, "audit_started", start)
        add(op, 10**6, "audit_closed", start + step - 1, status="error" if op % 10 == 0 else "completed",
            event_count=10**6 + 1)
    for r in range(requests):
        op = r * (OPERATIONS // requests)
        add(op, 10**6 - 1, "user_request", START_US + op * step + 1, request_type="erasure",
            user_id=f"subject_{r}", status="received" if r % 2 else "completed",
            details=json.dumps({"request_id": f"req-{r}"}))
    table = _table(rows)
    table = table.sort_by([("operation_name", "ascending"), ("timestamp", "ascending"), ("seq", "ascending")])
    write_deltalake(Lake(log_dir).uri, with_partition(table).cast(table_schema()), mode="append",
                    partition_by=[PARTITION_KEY], writer_properties=WRITER)


def write_alerts(log_dir: Path, count: int) -> None:
    """An alerter's record of `count` alerts (the JSON lines the alerter writes)."""
    folder = log_dir / "alerts"
    folder.mkdir(mode=0o700, exist_ok=True)
    with open(folder / "alerts.jsonl", "w", encoding="utf-8") as out:
        for i in range(count):
            out.write(json.dumps({
                "alert_id": f"{i:064x}", "rule_id": "bulk_access", "severity": ("low", "medium", "high")[i % 3],
                "regulation": "GDPR", "article": "Art. 5(1)(c)", "message": f"bulk access number {i}",
                "operation_id": f"op-{i % OPERATIONS}", "created_at": "2026-01-20T00:00:00+00:00",
                "event_time": f"2026-01-{1 + i % 28:02d}T00:00:00+00:00", "triggers": [], "details": {}}) + "\n")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(url: str) -> float:
    """Seconds one GET took (the whole body read); fails on anything but 200."""
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=300) as response:
        response.read()
        assert response.status == 200, (url, response.status)
    return time.perf_counter() - started


def quantiles(samples: list[float], first: float | None = None) -> dict[str, float]:
    """p50 and p99 in milliseconds (and the first, cold request's time when given)."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    out = {"p50_ms": round(statistics.median(ordered) * 1000, 1), "p99_ms": round(p99 * 1000, 1)}
    return out if first is None else {**out, "first_ms": round(first * 1000, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000_000, help="model_inference events in the lake")
    parser.add_argument("--requests", type=int, default=30, help="timed requests per page (after 3 warm-ups)")
    parser.add_argument("--lake", type=Path, metavar="DIR",
                        help="build the lake in DIR and keep it; reuse it when DIR exists (default: a temporary one)")
    parser.add_argument("--commits", type=int, default=0,
                        help="then append this many one-operation commits, timing the first page after each")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log_dir = args.lake or Path(tmp) / "lake"
        began = time.perf_counter()
        if not log_dir.exists():
            build_lake(log_dir, args.events, days=DAYS, operations=OPERATIONS)
            add_operations_and_requests(log_dir, 2_000)
            write_alerts(log_dir, 5_000)
        built = time.perf_counter() - began
        op = "op-1234"
        rows_per_op = args.events // OPERATIONS
        pages = {
            "operations": "/operations",
            "operations_page_100": "/operations?page=100",
            "operations_by_name": "/operations?name=model_7",
            "operations_by_user": "/operations?user=user_42",
            "operations_all_filters": "/operations?regulation=GDPR&status=error&start=2026-01-10&end=2026-01-20",
            "timeline": f"/operations/{op}",
            "timeline_last_page": f"/operations/{op}?page={max(1, rows_per_op // 50)}",
            "alerts": "/alerts",
            "alerts_page_50": "/alerts?page=50",
            "requests": "/requests",
            "integrity": "/integrity",
            "charts_data": "/charts/data.json",
            "static_asset_floor": "/static/app.css",
        }
        port = free_port()
        env = {**os.environ, "SECUREML_AUDIT_BOOTSTRAP_SERVERS": ""}
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "secureml-audit"), "ui", "--log-dir", str(log_dir), "--port", str(port),
             "--no-verify"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    get(base + "/static/app.css")
                    break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        why = server.stderr.read()[-2000:] if server.stderr else b""
                        raise SystemExit(f"bench: the explorer did not start: {why!r}") from None
                    time.sleep(0.2)
            # The server indexes the lake as it starts; meanwhile pages say so (503, reloading), within the budget.
            indexing: list[float] = []
            ready_began = time.perf_counter()
            while True:
                started = time.perf_counter()
                try:
                    get(base + "/operations")
                    break
                except urllib.error.HTTPError as exc:
                    if exc.code != 503:
                        raise
                    indexing.append(time.perf_counter() - started)
                    time.sleep(0.5)
            index_ready_s = round(time.perf_counter() - ready_began, 2)
            print(f"bench: index ready {index_ready_s} s after the server answered", file=sys.stderr)
            results: dict[str, dict[str, float]] = {}
            if indexing:
                results["indexing_page"] = quantiles(indexing)
            for name, path in pages.items():
                samples = [get(base + path) for _ in range(args.requests + 3)]
                results[name] = quantiles(samples[3:], samples[0])
                print(f"bench: {name} {results[name]}", file=sys.stderr)
            if args.commits:
                after = []
                for number in range(args.commits):
                    add_operation(log_dir, number)
                    after.append(get(base + "/operations"))
                results["operations_first_after_a_commit"] = quantiles(after)
                print(f"bench: operations_first_after_a_commit {results['operations_first_after_a_commit']}",
                      file=sys.stderr)
        finally:
            server.terminate()
            server.wait(30)
        floor = [0.0] * (args.requests + 3)
        for i in range(len(floor)):
            started = time.perf_counter()
            get_audit_logs(operation_id=op, log_dir=log_dir, limit=50)
            floor[i] = time.perf_counter() - started
        query_floor = quantiles(floor[3:])
    worst = max(v["p99_ms"] for k, v in results.items() if k != "static_asset_floor")
    print(json.dumps({
        "events": args.events, "operations": OPERATIONS, "build_seconds": round(built, 1),
        "index_ready_seconds": index_ready_s, "pages": results,
        "get_audit_logs_one_page_p50_ms": query_floor["p50_ms"],
        "worst_page_p99_ms": worst,
        "worst_page_p99_vs_get_audit_logs_p50": round(worst / max(query_floor["p50_ms"], 0.1), 1),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
