"""Bench: get_audit_logs over a 10M-event lake, one operation + a time range, warm.

Builds a compacted Delta lake of synthetic events (--layout: one sorted commit per day written
directly, one time-ordered one, or "product": time-ordered commits through Lake.commit as the
materializer makes them, then the product's own compaction; producing 10M events through Kafka
would take minutes), then times
`get_audit_logs(operation_name=..., start_time=..., end_time=...)` against a baseline in the
same run: the same filter as a DuckDB scan of the same files without the lake's pruning
(the Delta log's per-file time statistics).

Also times one operation_id among all events (no time range: the reader's operation index
names the files holding it, the first lookup of the process builds it) against the same DuckDB scan,
and the dict rate of large results (time ranges returning about 100k and 1M rows) against the same
query's Arrow output, alternating. Every dict query is also run, right after, with the accelerator's
dict conversion switched off (the pure-Python path, as main had it): the native/Python ratios are pairs
in the same run.

    .venv/bin/python bench/bench_query.py [--events 10000000] [--queries 30] [--lake DIR]
        [--layout sorted|appended|product] [--commit-events 200000] [--large-rows 100000,1000000]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import write_deltalake

from secureml.audit import get_audit_logs
from secureml.lake.rows import PARTITION_KEY, lake_schema, table_schema, with_partition
from secureml.lake.table import WRITER, Lake
from secureml.query import logs as logs_module

DAY_US = 86_400_000_000
START_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


def build_lake(log_dir: Path, events: int, days: int = 30, operations: int = 20_000, *, layout: str = "sorted",
               commit_events: int = 200_000) -> dict[str, float]:
    """A lake of `events` rows over `days` date partitions; returns what building it took.

    ``layout``: "sorted", each day one file sorted by operation and time (as a z-order left a
    closed day); "appended", each day one file in time order; "product", each day in
    time-ordered commits of ``commit_events`` through Lake.commit (as the materializer commits
    them), then the product's own compaction (Lake.compact_all: closed days rewritten in
    operation order), its time and peak RSS measured in a child process of its own.
    """
    schema = lake_schema()
    lake = Lake(log_dir)
    per_day = events // days
    for day in range(days):
        n = per_day
        idx = pa.array(range(n), pa.int64())
        op_number = pc.add(pc.multiply(pa.scalar(day, pa.int64()), pa.scalar(operations // days, pa.int64())),
                           pc.divide(idx, pa.scalar(max(1, n // (operations // days)), pa.int64())))
        model_number = pc.bit_wise_and(op_number, pa.scalar(63, pa.int64()))
        names = pc.binary_join_element_wise("model_", pc.cast(model_number, pa.string()), "")
        ops = pc.binary_join_element_wise("op-", pc.cast(op_number, pa.string()), "")
        step = pa.scalar(DAY_US // n, pa.int64())
        ts = pc.add(pa.scalar(START_US + day * DAY_US, pa.int64()), pc.multiply(idx, step))
        columns = {
            "schema_version": pa.array([1] * n, pa.int32()),
            "event_id": pc.binary_join_element_wise(ops, pc.cast(idx, pa.string()), ":"),
            "operation_id": ops, "operation_name": names, "operation_start": ts, "seq": idx,
            "event_type": pa.repeat(pa.scalar("model_inference"), n), "level": pa.array([20] * n, pa.int32()),
            "timestamp": ts, "regulations": pa.repeat(pa.scalar(["GDPR"], pa.large_list(pa.large_string())), n),
            "context": pa.repeat(pa.scalar("{}"), n), "producer_host": pa.repeat(pa.scalar("h"), n),
            "producer_pid": pa.repeat(pa.scalar(1, pa.int64()), n),
            "producer_version": pa.repeat(pa.scalar("0.1.0"), n),
            "model_id": names, "input_data": ops, "output": pa.repeat(pa.scalar('"low_risk"'), n),
            "confidence": pa.repeat(pa.scalar(0.87), n), "prev_hash": pa.repeat(pa.scalar("0" * 64), n),
            "hash": pa.repeat(pa.scalar("1" * 64), n), "source": pa.repeat(pa.scalar("bench/0"), n),
            "source_offset": pc.add(idx, pa.scalar(day * n, pa.int64())),
        }
        arrays = [columns[f.name].cast(f.type) if f.name in columns else pa.nulls(n, f.type) for f in schema]
        table = pa.Table.from_arrays(arrays, schema=schema)
        order = [("operation_name", "ascending")] if layout == "sorted" else []
        table = table.sort_by([*order, ("timestamp", "ascending"), ("seq", "ascending")])
        if layout == "product":
            for start in range(0, n, commit_events):
                first = day * n + start
                rows = table.slice(start, commit_events)
                lake.commit({"bench/0": rows}, {"bench/0": (first, first + rows.num_rows)})
        else:
            write_deltalake(lake.uri, with_partition(table).cast(table_schema()), mode="append",
                            partition_by=[PARTITION_KEY], writer_properties=WRITER)
        print(f"\rbench: wrote day {day + 1}/{days}", file=sys.stderr, end="")
    print(file=sys.stderr)
    if layout != "product":
        return {}
    return compact_in_child(log_dir)


COMPACT = """
import json, resource, sys, time
from secureml.lake.table import Lake
began = time.perf_counter()
files = Lake(sys.argv[1]).compact_all()
usage = resource.getrusage(resource.RUSAGE_SELF)
# VmHWM, not ru_maxrss: a child's ru_maxrss counts the RSS of the parent it was forked from (here: the builder's).
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"files_replaced": files, "seconds": round(time.perf_counter() - began, 1),
                  "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1), "peak_rss_mb": peak // 1024}))
"""


def compact_in_child(log_dir: Path) -> dict[str, float]:
    """The product's compaction of the whole lake (every day closed), in a child: its time and its own peak RSS."""
    done = subprocess.run([sys.executable, "-c", COMPACT, str(log_dir)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench: compaction failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"bench: compaction: {result}", file=sys.stderr)
    return result


def _paired(ours: list[float], baseline: list[float]) -> float:
    """The median of each query's time over its own baseline's, run right after it."""
    return round(statistics.median(o / b for o, b in zip(ours, baseline)), 3)


@contextlib.contextmanager
def _python_path() -> Iterator[None]:
    """get_audit_logs with the accelerator's dict conversion switched off: the pure-Python conversion."""
    native = logs_module._native_log_dicts
    logs_module._native_log_dicts = None
    try:
        yield
    finally:
        logs_module._native_log_dicts = native


def _timed(call: Callable[[], Any]) -> tuple[Any, float, float]:
    """call()'s result, wall and CPU seconds (the process's CPU: DuckDB's threads included)."""
    c0, t0 = time.process_time(), time.perf_counter()
    result = call()
    return result, time.perf_counter() - t0, time.process_time() - c0


def _large_result(log_dir: Path, size: int) -> dict[str, float]:
    """Dicts against Arrow and against the pure-Python dicts, alternating, for a time range from 2026-01-02
    holding about ``size`` rows."""
    per_us = Lake(log_dir).snapshot().rows / (30 * DAY_US)  # both lake builders spread events over 30 days
    start_us = START_US + DAY_US
    span = {"start_time": _iso(start_us), "end_time": _iso(start_us + int(size / per_us))}
    dicts, arrow, floor, python, dicts_cpu, python_cpu, rows = [], [], [], [], [], [], 0
    for round_ in range(7 if size <= 200_000 else 3):
        for path in ("python", "native") if round_ % 2 else ("native", "python"):  # which goes first alternates
            with _python_path() if path == "python" else contextlib.nullcontext():
                logs, wall, cpu = _timed(lambda: get_audit_logs(log_dir=log_dir, **span))
            (python if path == "python" else dicts).append(wall)
            (python_cpu if path == "python" else dicts_cpu).append(cpu)
            rows, sample = len(logs), logs[-1]
            del logs
        _, wall, _ = _timed(lambda: get_audit_logs(log_dir=log_dir, output="arrow", **span))
        arrow.append(wall)
        # A floor for any dict output: copying one ready dict per row (its keys, the values shared), the
        # garbage collector paused as get_audit_logs pauses it.
        gc.disable()
        t2 = time.perf_counter()
        copies = list(map(dict, itertools.repeat(sample, rows)))
        floor.append(time.perf_counter() - t2)
        gc.enable()
        del copies
    return {
        "rows": rows,
        "dicts_rows_per_s": round(rows / statistics.median(dicts)),
        "arrow_rows_per_s": round(rows / statistics.median(arrow)),
        "dicts_vs_arrow_time": round(statistics.median(dicts) / statistics.median(arrow), 2),
        "dicts_vs_arrow_time_median_of_pairs": _paired(dicts, arrow),
        # What making the dicts adds to the same query (the dict rate of the conversion alone).
        "conversion_rows_per_s": round(rows / max(1e-9, statistics.median(dicts) - statistics.median(arrow))),
        "dict_copy_floor_rows_per_s": round(rows / statistics.median(floor)),
        "python_path_dicts_rows_per_s": round(rows / statistics.median(python)),
        "native_vs_python_path_time_median_of_pairs": _paired(dicts, python),
        "dicts_cpu_rows_per_s": round(rows / statistics.median(dicts_cpu)),
        "python_path_dicts_cpu_rows_per_s": round(rows / statistics.median(python_cpu)),
        "native_vs_python_path_cpu_median_of_pairs": _paired(dicts_cpu, python_cpu),
    }


def _iso(micros: int) -> str:
    """A time in micros as the ISO 8601 text get_audit_logs takes."""
    return dt.datetime.fromtimestamp(micros / 1e6, dt.UTC).isoformat()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--lake", type=Path, metavar="DIR",
                        help="build the lake in DIR and keep it; reuse it when DIR exists (default: a temporary one)")
    parser.add_argument("--layout", choices=("sorted", "appended", "product"), default="sorted",
                        help="each day one file sorted by operation and time, or one file in time order, or "
                             "time-ordered commits then the product's compaction")
    parser.add_argument("--commit-events", type=int, default=200_000,
                        help="events per commit of --layout product (the materializer's batch)")
    parser.add_argument("--large-rows", default="100000,1000000",
                        help="sizes of the large results whose dict rate is measured (comma-separated)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log_dir = args.lake or Path(tmp) / "lake"
        began = time.perf_counter()
        compaction: dict[str, float] = {}
        if not log_dir.exists():
            compaction = build_lake(log_dir, args.events, layout=args.layout, commit_events=args.commit_events)
        built = time.perf_counter() - began
        start, end = "2026-01-12T06:00:00", "2026-01-12T18:00:00"
        paths = Lake(log_dir).snapshot().uris()  # the current version's files: compaction leaves superseded ones
        load_before = os.getloadavg()
        ours, ours_arrow, ours_python, baseline, rows = [], [], [], [], 0
        con = duckdb.connect()
        for q in range(args.queries + 3):
            name = f"model_{q % 64}"
            t0 = time.perf_counter()
            logs = get_audit_logs(operation_name=name, start_time=start, end_time=end, log_dir=log_dir)
            t1 = time.perf_counter()
            table = get_audit_logs(operation_name=name, start_time=start, end_time=end, log_dir=log_dir, output="arrow")
            t1b = time.perf_counter()
            with _python_path():
                python_logs = get_audit_logs(operation_name=name, start_time=start, end_time=end, log_dir=log_dir)
            t1c = time.perf_counter()
            n = con.sql(
                "SELECT * FROM read_parquet(?) WHERE operation_name = ? AND "
                "timestamp BETWEEN ?::TIMESTAMPTZ AND ?::TIMESTAMPTZ ORDER BY timestamp",
                params=[paths, name, start + "+00:00", end + "+00:00"],
            ).to_arrow_table().num_rows
            t2 = time.perf_counter()
            assert n == len(logs) == table.num_rows == len(python_logs), (n, len(logs))
            if q >= 3:  # warm
                ours.append(t1 - t0)
                ours_arrow.append(t1b - t1)
                ours_python.append(t1c - t1b)
                baseline.append(t2 - t1c)
                rows += n
        by_id, by_id_python, by_id_scan, id_rows, first_id = [], [], [], 0, 0.0
        for q in range(args.queries + 3):
            op = f"op-{(q * 7919) % 20_000}"
            t0 = time.perf_counter()
            logs = get_audit_logs(operation_id=op, log_dir=log_dir)
            t1 = time.perf_counter()
            first_id = first_id or t1 - t0  # the process's first lookup indexes every data file
            with _python_path():
                python_logs = get_audit_logs(operation_id=op, log_dir=log_dir)
            t1b = time.perf_counter()
            n = con.sql("SELECT * FROM read_parquet(?) WHERE operation_id = ? ORDER BY timestamp",
                        params=[paths, op]).to_arrow_table().num_rows
            t2 = time.perf_counter()
            assert n == len(logs) == len(python_logs), (op, n, len(logs))
            if q >= 3:
                by_id.append(t1 - t0)
                by_id_python.append(t1b - t1)
                by_id_scan.append(t2 - t1b)
                id_rows += n
        large = {size: _large_result(log_dir, size) for size in map(int, args.large_rows.split(","))}
        result = {
            "events": args.events, "layout": args.layout, "build_seconds": round(built, 1),
            "files": len(Lake(log_dir).snapshot().files), "compaction": compaction,
            "native_dicts": logs_module._native_log_dicts is not None,
            "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
            "get_audit_logs_p50_ms": round(statistics.median(ours) * 1000, 1),
            "get_audit_logs_p90_ms": round(sorted(ours)[int(len(ours) * 0.9)] * 1000, 1),
            "get_audit_logs_arrow_p50_ms": round(statistics.median(ours_arrow) * 1000, 1),
            "get_audit_logs_python_path_p50_ms": round(statistics.median(ours_python) * 1000, 1),
            "get_audit_logs_python_path_p90_ms": round(sorted(ours_python)[int(len(ours_python) * 0.9)] * 1000, 1),
            "native_vs_python_path_median_of_pairs": _paired(ours, ours_python),
            "duckdb_arrow_same_query_all_files_p50_ms": round(statistics.median(baseline) * 1000, 1),
            "speedup_vs_scan": round(statistics.median(baseline) / statistics.median(ours), 2),
            "arrow_speedup_vs_scan": round(statistics.median(baseline) / statistics.median(ours_arrow), 2),
            # Each query against the scan run right after it: steadier than a ratio of medians under bursty load.
            "dicts_vs_scan_median_of_pairs": _paired(ours, baseline),
            "arrow_vs_scan_median_of_pairs": _paired(ours_arrow, baseline),
            "rows_per_query": rows // args.queries,
            "operation_id_first_lookup_ms": round(first_id * 1000, 1),
            "operation_id_p50_ms": round(statistics.median(by_id) * 1000, 1),
            "operation_id_p90_ms": round(sorted(by_id)[int(len(by_id) * 0.9)] * 1000, 1),
            "operation_id_python_path_p50_ms": round(statistics.median(by_id_python) * 1000, 1),
            "operation_id_native_vs_python_path_median_of_pairs": _paired(by_id, by_id_python),
            "duckdb_operation_id_all_files_p50_ms": round(statistics.median(by_id_scan) * 1000, 1),
            "operation_id_speedup_vs_scan": round(statistics.median(by_id_scan) / statistics.median(by_id), 2),
            "operation_id_vs_scan_median_of_pairs": _paired(by_id, by_id_scan),
            "rows_per_operation": id_rows // args.queries,
            "large_results": large,
        }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
