"""Benchmark: `verify` throughput over a lake of 1M+ real events, against the materializer's rate in the same run.

The events are logged through AuditTrail (so every hash and chain is real) into the embedded
log, or into Kafka with --bootstrap-servers, then materialised once by the materializer
without its checkpointer (its own rate), checkpointed once over the whole lake (the signing
cost), and verified --repeat times with the public key. Target: verification at least as fast
as materialisation.

Run: .venv/bin/python bench/bench_verify.py [--events 1000000] [--bootstrap-servers HOST:PORT] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from secureml.audit import AuditTrail
from secureml.audit.config import resolve_config
from secureml.integrity import LakeCheckpointer, verify
from secureml.integrity.keys import SIGNING_KEY_ENV, generate_key, public_key_path
from secureml.lake.table import Lake
from secureml.materializer.runner import Materializer
from secureml.stream.sources import EmbeddedSource, Source

EVENTS_PER_OPERATION = 1000
MODELS = ("credit_v1", "credit_v2", "fraud_v7")
DATASETS = tuple(f"dataset_{i:02d}" for i in range(40))


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


def source_for(log_dir: Path, bootstrap: str, topic: str) -> Source:
    """The materializer's source for the bench's transport."""
    if not bootstrap:
        return EmbeddedSource(log_dir)
    from secureml.stream.kafka import KafkaSource

    return KafkaSource(resolve_config(log_dir=log_dir, bootstrap_servers=bootstrap, topic=topic),
                       f"bench-{uuid.uuid4().hex[:8]}")


def main() -> int:
    """Build the lake, time materialise, checkpoint and verify, print the results as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="verification runs")
    parser.add_argument("--bootstrap-servers", default="", help="log through Kafka instead of the embedded log")
    parser.add_argument("--keep", type=Path, help="keep the lake in this directory")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-verify-"))
    log_dir, key = work / "logs", work / "keys" / "signing_key.pem"
    os.environ[SIGNING_KEY_ENV] = str(key)  # never the home directory's key
    topic = f"bench-verify-{uuid.uuid4().hex[:8]}"
    try:
        started = time.perf_counter()
        log_events(log_dir, args.events, args.bootstrap_servers, topic)
        print(f"logged {args.events:,} events in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        lake = Lake(log_dir)
        stats = Materializer(lake, source_for(log_dir, args.bootstrap_servers, topic)).run(once=True)
        generate_key(key)
        started = time.perf_counter()
        LakeCheckpointer(key, create_key=False).checkpoint(lake)
        checkpoint_s = time.perf_counter() - started
        samples = []
        for _ in range(args.repeat):
            result = verify(log_dir, public_key=public_key_path(key))
            if not result.ok or result.events != args.events:
                print(json.dumps(result.summary(), indent=2), file=sys.stderr)
                return 2
            samples.append(result.seconds)
        verify_s = statistics.median(samples)
        report = {
            "events": args.events,
            "transport": "kafka" if args.bootstrap_servers else "embedded",
            "materialize_s": round(stats.seconds, 3),
            "materialize_events_per_s": round(stats.rate),
            "checkpoint_whole_lake_s": round(checkpoint_s, 3),
            "verify_s": round(verify_s, 3),
            "verify_samples_s": [round(s, 3) for s in samples],
            "verify_events_per_s": round(args.events / verify_s),
            "ratio_verify_vs_materialize": round(args.events / verify_s / stats.rate, 2),
            "meets_target": args.events / verify_s >= stats.rate,
        }
        print(json.dumps(report, indent=2))
        return 0 if report["meets_target"] else 1
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
