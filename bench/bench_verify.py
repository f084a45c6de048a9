"""Benchmark: `verify` rate and peak RSS over a lake of 1M-10M real events, against the materializer in the same run.

The events are logged through AuditTrail (so every hash and chain is real) into the embedded
log, or into Kafka with --bootstrap-servers, then materialised once by the materializer
without its checkpointer, checkpointed once over the whole lake (the signing cost), and
verified --repeat times with the public key. Each step runs in a child process of its own, so
its peak RSS (``ru_maxrss``) is its own. With --lake DIR the lake is kept there and reused by
later runs (building 10M events takes several minutes); the materializer's rate is then
measured in the same run on a fresh log of --baseline-events. Target: verification at least
2x the materializer's rate, in at most 500 MB peak RSS.

Run: .venv/bin/python bench/bench_verify.py [--events 1000000] [--lake DIR] [--bootstrap-servers HOST:PORT]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from secureml.audit import AuditTrail
from secureml.integrity.keys import SIGNING_KEY_ENV

EVENTS_PER_OPERATION = 1000
MODELS = ("credit_v1", "credit_v2", "fraud_v7")
DATASETS = tuple(f"dataset_{i:02d}" for i in range(40))
RSS_TARGET_MB = 500

# Each step in a child: its result as JSON on the last line, with its own peak RSS.
CHILD = """
import json, resource, sys, time
from pathlib import Path
step, log_dir, key, bootstrap, topic = sys.argv[1:6]
began = time.perf_counter()
result = {}
if step == "materialize":
    from secureml.lake.table import Lake
    from secureml.materializer.runner import Materializer
    if bootstrap:
        from secureml.audit.config import resolve_config
        from secureml.stream.kafka import KafkaSource
        config = resolve_config(log_dir=log_dir, bootstrap_servers=bootstrap, topic=topic)
        source = KafkaSource(config, "bench-" + topic)
    else:
        from secureml.stream.sources import EmbeddedSource
        source = EmbeddedSource(Path(log_dir))
    stats = Materializer(Lake(Path(log_dir)), source).run(once=True)
    result = {"events": stats.events, "seconds": stats.seconds}
elif step == "checkpoint":
    from secureml.integrity import LakeCheckpointer
    from secureml.integrity.keys import generate_key
    from secureml.lake.table import Lake
    generate_key(Path(key))
    LakeCheckpointer(Path(key), create_key=False).checkpoint(Lake(Path(log_dir)))
    result = {"seconds": time.perf_counter() - began}
else:
    from secureml.integrity import verify
    from secureml.integrity.keys import public_key_path
    verified = verify(log_dir, public_key=public_key_path(Path(key)))
    result = {"events": verified.events, "seconds": verified.seconds, "ok": verified.ok,
              "summary": None if verified.ok else verified.summary()}
result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(result, default=str))
"""


def log_events(log_dir: Path, events: int, bootstrap: str, topic: str) -> None:
    """Log events in operations of EVENTS_PER_OPERATION, mostly inferences, like a model server."""
    rng = random.Random(7)
    remaining = events
    while remaining > 0:
        size = min(EVENTS_PER_OPERATION, remaining)
        trail = AuditTrail(rng.choice(("scoring", "training", "kyc")), log_dir=log_dir, context={"app": "bench"},
                           regulations=["GDPR"], user=f"svc_{rng.randrange(9)}", bootstrap_servers=bootstrap,
                           topic=topic)
        for i in range(size - 2):
            draw = rng.random()
            if draw < 0.8:
                trail.log_model_inference(rng.choice(MODELS), f"req-{i}", "low_risk", rng.random())
            elif draw < 0.9:
                trail.log_data_access(rng.choice(DATASETS), ["income", "age"], rng.randrange(50_000), "scoring")
            else:
                trail.log_compliance_check("consent", "GDPR", draw < 0.99, {"checked": i})
        trail.close()
        remaining -= size
        done = events - remaining
        if done % 100_000 < EVENTS_PER_OPERATION:
            print(f"\rbench: logged {done:,}/{events:,}", file=sys.stderr, end="")
    print(file=sys.stderr)


def step(name: str, log_dir: Path, key: Path, bootstrap: str = "", topic: str = "", code: Path | None = None
         ) -> dict:
    """Run one step in a child process (with the source tree ``code`` when given); its JSON result."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECUREML_AUDIT_")}
    if code is not None:
        env["PYTHONPATH"] = f"{code / 'producer'}:{code / 'consumers'}"
    env[SIGNING_KEY_ENV] = str(key)  # never the home directory's key
    out = subprocess.run([sys.executable, "-c", CHILD, name, str(log_dir), str(key), bootstrap, topic],
                         env=env, capture_output=True, text=True, timeout=7200)
    if out.returncode != 0:
        raise SystemExit(f"bench: {name} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"bench: {name}: {result}", file=sys.stderr)
    return result


def build(work: Path, events: int, bootstrap: str) -> dict:
    """Log and materialise ``events`` into ``work/logs`` (materializer measured); the materializer's result."""
    topic = f"bench-verify-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    log_events(work / "logs", events, bootstrap, topic)
    print(f"bench: logged {events:,} events in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return step("materialize", work / "logs", work / "keys" / "signing_key.pem", bootstrap, topic)


def main() -> int:
    """Build (or reuse) the lake, time materialise, checkpoint and verify, print the results as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="verification runs")
    parser.add_argument("--bootstrap-servers", default="", help="log through Kafka instead of the embedded log")
    parser.add_argument("--lake", "--keep", type=Path, help="build the lake here once and reuse it in later runs")
    parser.add_argument("--baseline-events", type=int, default=1_000_000,
                        help="events of the fresh log the materializer's rate is measured on when the lake is reused")
    parser.add_argument("--code", type=Path, help="verify with this source tree (producer/, consumers/), e.g. an "
                        "older commit's `git archive`, to compare")
    args = parser.parse_args()
    work = args.lake or Path(tempfile.mkdtemp(prefix="bench-verify-"))
    log_dir, key = work / "logs", work / "keys" / "signing_key.pem"
    report: dict[str, object] = {"events": args.events,
                                 "transport": "kafka" if args.bootstrap_servers else "embedded"}
    try:
        if not (work / "built").exists():
            materialized = build(work, args.events, args.bootstrap_servers)
            report["checkpoint_whole_lake"] = step("checkpoint", log_dir, key)
            (work / "built").write_text(json.dumps({"events": args.events}))
        else:
            report["events"] = json.loads((work / "built").read_text())["events"]
            with tempfile.TemporaryDirectory(prefix="bench-verify-baseline-") as tmp:
                materialized = build(Path(tmp), args.baseline_events, args.bootstrap_servers)
        samples = [step("verify", log_dir, key, code=args.code) for _ in range(args.repeat)]
        for sample in samples:
            if not sample["ok"] or sample["events"] != report["events"]:
                print(json.dumps(sample["summary"], indent=2), file=sys.stderr)
                return 2
        rate = materialized["events"] / materialized["seconds"]
        verify_s = statistics.median(s["seconds"] for s in samples)
        peak = max(s["peak_rss_mb"] for s in samples)
        verify_rate = int(report["events"]) / verify_s  # type: ignore[call-overload]
        report |= {
            "materialize_events": materialized["events"],
            "materialize_events_per_s": round(rate),
            "materialize_peak_rss_mb": round(materialized["peak_rss_mb"]),
            "verify_s": round(verify_s, 3),
            "verify_samples_s": [round(s["seconds"], 3) for s in samples],
            "verify_events_per_s": round(verify_rate),
            "verify_peak_rss_mb": round(peak),
            "ratio_verify_vs_materialize": round(verify_rate / rate, 2),
            "meets_target": verify_rate >= 2 * rate and peak <= RSS_TARGET_MB,
        }
        print(json.dumps(report, indent=2))
        return 0 if report["meets_target"] else 1
    finally:
        if args.lake is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
