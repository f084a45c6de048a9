"""Bench: log_model_inference throughput, ours (Kafka and embedded) against SecureML 0.3.1, alternating.

Ours into Kafka is measured end to end: acks=all, idempotent, hash-chained, and flushed by
close(), so every event counted is acknowledged by the broker. Also measures the
materializer's events/s against a plain consumer reading the same messages (the ceiling).

    .venv/bin/python bench/bench_log.py [--events 20000] [--rounds 5] [--materialize 500000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _common import bootstrap, log_inferences, median, secureml_031_audit
from secureml.audit import AuditTrail


def run_secureml(module, events: int, directory: Path) -> float:  # noqa: ANN001 - a loaded module
    trail = module.AuditTrail("bench", log_dir=str(directory))
    began = time.perf_counter()
    for i in range(events):
        trail.log_model_inference(model_id="credit_risk_v1", input_data=f"application_{i}", output="low_risk",
                                  confidence=0.87)
    trail.close()
    return events / (time.perf_counter() - began)


def run_ours(events: int, **options: object) -> float:
    trail = AuditTrail("bench", **options)
    began = time.perf_counter()
    for i in range(events):
        trail.log_model_inference(model_id="credit_risk_v1", input_data=f"application_{i}", output="low_risk",
                                  confidence=0.87)
    report = trail.close()
    elapsed = time.perf_counter() - began
    assert report.ok and report.delivered == events + 2, report
    return events / elapsed


def bench_materializer(broker: str, events: int, directory: Path) -> dict[str, float]:
    from confluent_kafka import Consumer

    from secureml.materializer import materialize

    topic = f"bench-{uuid.uuid4().hex[:8]}"
    log_inferences(events, directory, broker, topic)
    consumer = Consumer({"bootstrap.servers": broker, "group.id": f"plain-{topic}", "auto.offset.reset": "earliest",
                         "enable.partition.eof": True})
    consumer.subscribe([topic])
    seen = eofs = 0
    began = time.perf_counter()
    while seen < events:
        for msg in consumer.consume(num_messages=50_000, timeout=1.0):
            if msg.error() is None:
                seen += 1
    plain = seen / (time.perf_counter() - began)
    consumer.close()
    stats = materialize(directory, bootstrap_servers=broker, topic=topic, group=f"mat-{topic}")
    assert stats.events == events, stats
    return {"materializer_events_per_s": stats.rate, "plain_consumer_events_per_s": plain,
            "materializer_vs_plain_consumer": stats.rate / plain, "events": events, "eofs": eofs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--materialize", type=int, default=500_000)
    args = parser.parse_args()
    broker = bootstrap()
    baseline = secureml_031_audit()
    rates: dict[str, list[float]] = {"secureml_0.3.1": [], "ours_kafka": [], "ours_embedded": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run_ours(2000, log_dir=root / "warm", bootstrap_servers=broker, topic="bench-warmup")  # connect, create topic
        for r in range(args.rounds):
            rates["secureml_0.3.1"].append(run_secureml(baseline, args.events, root / f"s{r}"))
            rates["ours_kafka"].append(run_ours(args.events, log_dir=root / f"k{r}", bootstrap_servers=broker,
                                                topic="bench-log"))
            rates["ours_embedded"].append(run_ours(args.events, log_dir=root / f"e{r}", bootstrap_servers=""))
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in rates.items()),
                  file=sys.stderr)
        result: dict[str, object] = {k: round(median(v)) for k, v in rates.items()}
        result["ratio_kafka_vs_secureml"] = round(median(rates["ours_kafka"]) / median(rates["secureml_0.3.1"]), 2)
        result["ratio_embedded_vs_secureml"] = round(
            median(rates["ours_embedded"]) / median(rates["secureml_0.3.1"]), 2)
        if args.materialize:
            result.update({k: round(v, 2) for k, v in bench_materializer(broker, args.materialize, root / "m").items()})
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
