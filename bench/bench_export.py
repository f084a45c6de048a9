"""Bench: `export` rate (events/s) against a plain get_audit_logs read of the same lake, in the same run.

Builds the synthetic lake of bench_query (one sorted commit per day), then exports it as JSON
lines, OCSF and OpenLineage into files (batch mode: one table version, 10,000-event batches)
and reads it whole with `get_audit_logs` (dicts) as the baseline. Exports run first, so the
peak RSS after them is theirs alone (bounded by the batch); the baseline holds every event.

    .venv/bin/python bench/bench_export.py [--events 1000000] [--batch-events 10000]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from bench_query import build_lake

from secureml.audit import get_audit_logs
from secureml.export.runner import Exporter


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch-events", type=int, default=10_000)
    args = parser.parse_args()
    result: dict[str, object] = {"events": args.events, "batch_events": args.batch_events}
    with tempfile.TemporaryDirectory() as tmp:
        log_dir = Path(tmp) / "lake"
        build_lake(log_dir, args.events)
        events = args.events // 30 * 30  # build_lake writes whole days of events
        result["events"] = events
        result["rss_after_build_mb"] = peak_rss_mb()
        rates = {}
        for export_format in ("jsonl", "ocsf", "openlineage"):
            out = Path(tmp) / f"out.{export_format}"
            began = time.perf_counter()
            stats = Exporter(export_format, f"file:{out}", log_dir=log_dir, batch_events=args.batch_events).run_batch()
            seconds = time.perf_counter() - began
            assert stats.events == events, stats
            rates[export_format] = events / seconds
            result[f"export_{export_format}_events_per_s"] = round(rates[export_format])
            result[f"export_{export_format}_mb"] = round(out.stat().st_size / 2**20, 1)
            print(f"bench: {export_format} {seconds:.1f}s", file=sys.stderr)
        result["export_peak_rss_mb"] = peak_rss_mb()
        began = time.perf_counter()
        logs = get_audit_logs(log_dir=log_dir)
        seconds = time.perf_counter() - began
        assert len(logs) == events
        baseline = events / seconds
        result["get_audit_logs_events_per_s"] = round(baseline)
        result["get_audit_logs_peak_rss_mb"] = peak_rss_mb()
        for export_format, rate in rates.items():
            result[f"export_{export_format}_vs_get_audit_logs"] = round(rate / baseline, 2)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
