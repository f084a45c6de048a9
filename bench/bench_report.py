"""Benchmark: a PDF audit report over 1M events of a real lake (target <= 5 s).

The lake is built once per run from synthetic events written straight into the Parquet lake
(Lake.commit, the materializer's own commit), so the report reads it through the same
`connect(log_dir)` view as in production. Two baselines from the same run make the number
mean something on a noisy machine:

* the same report over a 100k-event lake (how the cost scales), and
* reading the 1M events as Python dicts with get_audit_logs(), which is what a report built
  from `logs=get_audit_logs(...)` has to pay before it even starts.

pdf_report_s is the median of --repeat warm runs; the first (cold cache) run is reported too.

Run: .venv/bin/python bench/bench_report.py [--events 1000000] [--repeat 5] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from secureml.audit import connect, get_audit_logs
from secureml.lake.rows import lake_schema
from secureml.lake.table import Lake
from secureml.reporting import ReportGenerator

TARGET_SECONDS = 5.0
START = datetime(2024, 3, 4, tzinfo=UTC)
SPAN = timedelta(days=7)
EVENT_TYPES = {
    "model_inference": 0.70,
    "data_access": 0.10,
    "function_call": 0.04,
    "function_return": 0.04,
    "data_transformation": 0.03,
    "compliance_check": 0.04,
    "user_request": 0.01,
    "error": 0.01,
    "model_training": 0.005,
    "audit_started": 0.0125,
    "audit_closed": 0.0125,
}
OPERATIONS = ("credit_scoring", "fraud_detection", "churn_model_training", "kyc_pipeline",
              "marketing_segmentation", "patient_risk", "data_preprocessing", "batch_inference")
DATASETS = tuple(f"dataset_{i:02d}" for i in range(40))
REGULATIONS = (["GDPR"], ["GDPR", "CCPA"], ["CCPA"], ["HIPAA"])
CHECKS = ("data_minimization", "consent", "retention", "purpose_limitation", "anonymization")
STATUSES = ("received", "in_progress", "completed")


def _strings(rng: np.random.Generator, choices: tuple[str, ...], n: int, p: list[float] | None = None) -> pa.Array:
    """n strings drawn from choices, built as a dictionary array (fast), then decoded."""
    indices = pa.array(rng.choice(len(choices), size=n, p=p).astype(np.int32))
    return pa.DictionaryArray.from_arrays(indices, pa.array(choices)).cast(pa.string())


def synthetic_events(n: int, seed: int = 7) -> pa.Table:
    """n plausible events over one week, in the lake's schema, built column-wise with numpy."""
    rng = np.random.default_rng(seed)
    schema = lake_schema()
    types = tuple(EVENT_TYPES)
    weights = np.array(list(EVENT_TYPES.values()))
    kind = rng.choice(len(types), size=n, p=weights / weights.sum())
    event_type = pa.DictionaryArray.from_arrays(pa.array(kind.astype(np.int32)), pa.array(types)).cast(pa.string())
    is_type = {t: kind == i for i, t in enumerate(types)}
    micros = np.sort(rng.integers(0, int(SPAN.total_seconds() * 1e6), size=n)) + int(START.timestamp() * 1e6)
    operation_index = rng.integers(0, max(1, n // 400), size=n)
    operation_ids = pa.array([f"op-{i:08d}" for i in range(max(1, n // 400))])

    def only(mask: np.ndarray, values: pa.Array) -> pa.Array:
        """values where mask is set, nulls elsewhere (a payload field belongs to some event types)."""
        return pc.if_else(pa.array(mask), values, pa.nulls(n, values.type))

    columns = {
        "schema_version": pa.array(np.ones(n, np.int32)),
        "event_id": pa.array([f"e{i}" for i in range(n)]),
        "operation_id": pa.DictionaryArray.from_arrays(pa.array(operation_index.astype(np.int32)), operation_ids)
        .cast(pa.string()),
        "operation_name": pa.DictionaryArray.from_arrays(
            pa.array((operation_index % len(OPERATIONS)).astype(np.int32)), pa.array(OPERATIONS)).cast(pa.string()),
        "operation_start": pa.array(micros - rng.integers(0, 3_600_000_000, size=n), pa.timestamp("us", tz="UTC")),
        "seq": pa.array(np.arange(n, dtype=np.int64) % 400),
        "event_type": event_type,
        "level": pa.array(np.where(is_type["error"], 40, 20).astype(np.int32)),
        "timestamp": pa.array(micros, pa.timestamp("us", tz="UTC")),
        "user": _strings(rng, tuple(f"analyst_{i:03d}" for i in range(60)), n),
        "regulations": pa.array([REGULATIONS[i] for i in rng.integers(0, len(REGULATIONS), size=n)],
                                pa.list_(pa.string())),
        "context": pa.array(np.full(n, '{"app_version": "1.0.0"}')),
        "producer_host": pa.array(np.full(n, "bench")),
        "producer_pid": pa.array(np.full(n, 1, np.int64)),
        "producer_version": pa.array(np.full(n, "bench")),
        "dataset_name": only(is_type["data_access"] | is_type["model_training"], _strings(rng, DATASETS, n)),
        "num_records": only(is_type["data_access"], pa.array(rng.integers(1, 50_000, size=n))),
        "purpose": only(is_type["data_access"], _strings(rng, ("model_training", "scoring", "analytics", ""), n,
                                                          [0.4, 0.4, 0.19, 0.01])),
        "transformation_type": only(is_type["data_transformation"], _strings(rng, ("anonymization", "scaling"), n)),
        "model_type": only(is_type["model_training"], _strings(rng, ("random_forest", "xgboost"), n)),
        "model_id": only(is_type["model_inference"], _strings(rng, ("credit_v1", "credit_v2", "fraud_v7"), n)),
        "output": only(is_type["model_inference"], _strings(rng, ('"high_risk"', '"low_risk"'), n)),
        "confidence": only(is_type["model_inference"], pa.array(rng.random(n))),
        "check_type": only(is_type["compliance_check"], _strings(rng, CHECKS, n)),
        "regulation": only(is_type["compliance_check"], _strings(rng, ("GDPR", "CCPA", "HIPAA"), n)),
        "result": only(is_type["compliance_check"], pa.array(rng.random(n) > 0.05)),
        "details": only(is_type["compliance_check"] | is_type["user_request"],
                        _strings(rng, ('{"request_date": "2024-02-01"}', '{"columns_removed": ["ssn"]}'), n)),
        "request_type": only(is_type["user_request"], _strings(rng, ("access", "erasure", "rectification"), n)),
        "user_id": only(is_type["user_request"], _strings(rng, tuple(f"subject_{i:05d}" for i in range(3000)), n)),
        "status": only(is_type["user_request"] | is_type["audit_closed"], _strings(rng, STATUSES, n)),
        "function_name": only(is_type["function_call"] | is_type["function_return"],
                              _strings(rng, ("prep.clean", "prep.encode", "train.fit"), n)),
        "arguments": only(is_type["function_call"], pa.array(np.full(n, '{"df": {"type": "DataFrame"}}'))),
        "execution_time": only(is_type["function_return"], pa.array(rng.random(n) * 3)),
        "error_type": only(is_type["error"], _strings(rng, ("ValueError", "TimeoutError"), n)),
        "message": only(is_type["error"], _strings(rng, ("bad input", "upstream timed out"), n)),
        "event_count": only(is_type["audit_closed"], pa.array(rng.integers(2, 400, size=n))),
        "prev_hash": pa.array(np.full(n, "0" * 64)),
        "hash": pa.array(np.full(n, "1" * 64)),
        "source": pa.array(np.full(n, "bench")),
        "source_offset": pa.array(np.arange(n, dtype=np.int64)),
    }
    arrays = [columns[f.name].cast(f.type) if f.name in columns else pa.nulls(n, f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def build_lake(log_dir: Path, events: int) -> None:
    """A lake of synthetic events under log_dir, compacted like a long-running lake."""
    lake = Lake(log_dir)
    lake.commit({"bench": synthetic_events(events)}, {"bench": (0, events)})
    lake.compact_all()


def timed(action: Callable[[], object], repeat: int) -> tuple[float, float, list[float]]:
    """Seconds of a first (cold) call of action, then the median and samples of repeat warm calls."""
    samples = []
    for _ in range(repeat + 1):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return samples[0], statistics.median(samples[1:]), samples[1:]


def main() -> int:
    """Build the lakes, time the reports and the baseline, print the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5, help="warm runs after the first one")
    parser.add_argument("--keep", type=Path, help="keep the lakes and reports in this directory")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-report-"))
    small = max(1, args.events // 10)
    try:
        for name, n in (("big", args.events), ("small", small)):
            if not (work / name / "lake").exists():
                started = time.perf_counter()
                build_lake(work / name, n)
                print(f"built a {n:,}-event lake in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        generator = ReportGenerator(progress=False)

        def report(name: str) -> None:
            """The PDF report over the lake called name."""
            generator.generate_audit_report({"log_dir": str(work / name)}, work / f"{name}.pdf", "Bench report")

        big_cold, big, big_samples = timed(lambda: report("big"), args.repeat)
        _, small_time, _ = timed(lambda: report("small"), args.repeat)
        rows = connect(work / "big").execute("SELECT count(*) FROM events").fetchone()
        started = time.perf_counter()
        dicts = len(get_audit_logs(log_dir=work / "big"))
        dicts_time = time.perf_counter() - started
        result = {
            "events": rows[0] if rows else 0,
            "pdf_report_s": round(big, 3),
            "pdf_report_samples_s": [round(s, 3) for s in big_samples],
            "pdf_report_first_run_s": round(big_cold, 3),
            "target_s": TARGET_SECONDS,
            "meets_target": big <= TARGET_SECONDS,
            f"pdf_report_{small}_events_s": round(small_time, 3),
            "ratio_vs_10x_fewer_events": round(big / small_time, 2),
            f"get_audit_logs_dicts_{dicts}_s": round(dicts_time, 3),
            "ratio_vs_reading_dicts": round(big / dicts_time, 3),
        }
        print(json.dumps(result, indent=2))
        return 0 if result["meets_target"] else 1
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
