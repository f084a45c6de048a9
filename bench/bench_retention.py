"""Benchmark: `retention apply` and `verify` after it, against the materializer and `verify` before it, same run.

Half the events are logged 400 days ago (the trail's clock moved back), half today, through
AuditTrail into the embedded log; the lake is materialised with its checkpointer, verified,
then the default policy expires the old inferences (one commit, vacuumed, a signed record)
and the lake is verified again. Reported as ratios: expiry rate against the materializer's
rate, and verify after against verify before (the expired events' skeletons are checked too).

Run: .venv/bin/python bench/bench_retention.py [--events 200000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import secureml.audit.trail as trail_module
from secureml.audit import AuditTrail
from secureml.integrity import verify
from secureml.integrity.keys import SIGNING_KEY_ENV, generate_key, public_key_path
from secureml.materializer import materialize
from secureml.retention import apply_retention

OPERATIONS = 10
DAY_MICROS = 86_400 * 10**6


def log_events(log_dir: Path, events: int, days_ago: int) -> None:
    """Log ``events`` inferences in OPERATIONS trails, stamped ``days_ago`` days in the past."""
    real = trail_module.now_micros
    trail_module.now_micros = lambda: real() - days_ago * DAY_MICROS
    try:
        for op in range(OPERATIONS):
            trail = AuditTrail(f"scoring-{op}", log_dir=log_dir, regulations=["GDPR"])
            for i in range(events // OPERATIONS):
                trail.log_model_inference("credit_v1", f"req-{i}", "low_risk", 0.5)
            trail.close()
    finally:
        trail_module.now_micros = real


def main() -> int:
    """Build the lake, time materialise, verify, apply and verify again; print the results as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--keep", type=Path, help="keep the lake in this directory")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-retention-"))
    log_dir, key = work / "logs", work / "keys" / "signing_key.pem"
    os.environ[SIGNING_KEY_ENV] = str(key)  # never the home directory's key
    try:
        generate_key(key)
        log_events(log_dir, args.events // 2, 400)
        log_events(log_dir, args.events // 2, 0)
        stats = materialize(log_dir, bootstrap_servers="", once=True)
        before = verify(log_dir, public_key=public_key_path(key))
        started = time.perf_counter()
        result = apply_retention(log_dir)
        apply_s = time.perf_counter() - started
        after = verify(log_dir, public_key=public_key_path(key))
        if not (before.ok and after.ok and after.expired_events == result.events > 0):
            print(json.dumps(after.summary(), indent=2), file=sys.stderr)
            return 2
        report = {
            "events": before.events,
            "expired": result.events,
            "materialize_events_per_s": round(stats.rate),
            "apply_s": round(apply_s, 3),
            "apply_expired_per_s": round(result.events / apply_s),
            "ratio_apply_vs_materialize": round(result.events / apply_s / stats.rate, 2),
            "verify_before_s": round(before.seconds, 3),
            "verify_after_s": round(after.seconds, 3),
            "ratio_verify_after_vs_before": round(after.seconds / before.seconds, 2),
        }
        print(json.dumps(report, indent=2))
        return 0
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
