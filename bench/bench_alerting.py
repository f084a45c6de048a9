"""Bench: how soon a lineage alert arrives after the watermark passes the training, at a steady rate (Kafka).

A paced producer logs ``--rate`` events/s from ``--trails`` open trails spread over the
``--partitions`` partitions of a fresh topic (predictions, and every ``--train-every``-th
event a training on a dataset that nothing anonymised), while the alerter runs as the real
command in its own process. A consumer on the alerts topic notes when each alert arrives.
Afterwards the events topic is read back: the watermark passes a training at time t once every
partition holds an event later than t, i.e. at the latest, over partitions, of the first such
event's log time. Prints JSON: alert arrival minus that moment (p50/p90/p99/max ms, the target
is 200 ms), alert arrival minus the training's own time, and how many alerts came before the
watermark had passed (must be 0). For scale, the same run also logs data accesses without a
purpose (alerted on the event alone, no watermark): their log-to-alert latency is the
pipeline's own floor on this machine at this moment, and the ratios ``*_lineage_vs_single_event``
compare the two (1.0: the watermark adds no wait).

    .venv/bin/python bench/bench_alerting.py [--rate 5000] [--seconds 20] [--partitions 3] [--train-every 250]
"""

from __future__ import annotations

import argparse
import bisect
import json
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, TopicPartition

from _common import bootstrap, percentiles
from secureml.alerting import Alert
from secureml.audit import AuditTrail
from secureml.audit.config import resolve_config
from secureml.audit.timeutil import now_micros
from secureml.audit.transports.kafka import ensure_topic
from secureml.stream.decode import decode_one

RULES = "rules: {operation_not_closed: {enabled: false}}\n"


def collect(broker: str, topic: str, arrivals: dict[str, dict[str, int]], stop: threading.Event,
            ready: threading.Event) -> None:
    """Note the arrival time (UTC micros) of every alert, per rule, by the event id of its first trigger."""
    consumer = Consumer({"bootstrap.servers": broker, "group.id": f"bench-{uuid.uuid4().hex}",
                         "auto.offset.reset": "latest", "fetch.wait.max.ms": 5})
    consumer.subscribe([topic], on_assign=lambda *_: ready.set())
    try:
        while not stop.is_set():
            for msg in consumer.consume(1000, timeout=0.01):
                if msg.error() is None and (value := msg.value()) is not None:
                    alert = Alert.from_avro(value)
                    arrivals.setdefault(alert.rule_id, {}).setdefault(alert.triggers[0].event_id, now_micros())
    finally:
        consumer.close()


def produce(trails: list[AuditTrail], rate: float, seconds: float,
            train_every: int) -> tuple[int, list[str], list[str], float]:
    """Log at a steady rate, round robin over the trails; returns (events, trainings, purposeless reads, rate)."""
    total = int(rate * seconds)
    trainings: list[str] = []
    reads: list[str] = []
    began = time.perf_counter()
    for i in range(total):
        due = began + i / rate
        while (wait := due - time.perf_counter()) > 0:
            time.sleep(min(wait, 0.001))
        trail = trails[i % len(trails)]
        if i % train_every == 0:
            event_id = trail.log_model_training("logreg", f"raw-{uuid.uuid4().hex[:8]}", {"c": 1.0})
            assert event_id is not None
            trainings.append(event_id)
        elif i % train_every == train_every // 2:
            event_id = trail.log_data_access("customers", ["age"], 1, None)
            assert event_id is not None
            reads.append(event_id)
        else:
            trail.log_model_inference("churn-v1", f"request-{i}", "stay", 0.9)
    return total, trainings, reads, total / (time.perf_counter() - began)


def read_back(broker: str, topic: str) -> tuple[dict[int, list[int]], dict[str, int]]:
    """Event times per partition in log order, and each event's time by its id."""
    consumer = Consumer({"bootstrap.servers": broker, "group.id": f"bench-{uuid.uuid4().hex}",
                         "enable.partition.eof": True, "enable.auto.commit": False})
    try:
        partitions = list(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        times: dict[int, list[int]] = {p: [] for p in partitions}
        by_id: dict[str, int] = {}
        waiting = set(partitions)
        while waiting:
            for msg in consumer.consume(10_000, timeout=0.5):
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        waiting.discard(msg.partition() or 0)
                    continue
                record = decode_one(msg.value() or b"")
                times[msg.partition() or 0].append(record["timestamp"])
                by_id[record["event_id"]] = record["timestamp"]
        return times, by_id
    finally:
        consumer.close()


def passed_at(times: dict[int, list[int]], t: int) -> int | None:
    """When the watermark passed t: the latest, over partitions, of the first event later than t (None: never)."""
    firsts = []
    for series in times.values():
        index = bisect.bisect_right(series, t)
        if index == len(series):
            return None
        firsts.append(series[index])
    return max(firsts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=5000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--trails", type=int, default=30)
    parser.add_argument("--train-every", type=int, default=250)
    args = parser.parse_args()
    broker = bootstrap()
    events_topic, alerts_topic = f"bench-events-{uuid.uuid4().hex[:8]}", f"bench-alerts-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        config = resolve_config(log_dir=tmp, bootstrap_servers=broker, topic=events_topic)
        ensure_topic(config, partitions=args.partitions)
        ensure_topic(config, alerts_topic)
        (Path(tmp) / "rules.yaml").write_text(RULES)
        alerter = subprocess.Popen(
            [sys.executable, "-m", "secureml.audit.cli", "alerts", "--bootstrap-servers", broker, "--topic",
             events_topic, "--alerts-topic", alerts_topic, "--log-dir", tmp, "--rules", str(Path(tmp) / "rules.yaml"),
             "--group", f"bench-{events_topic}"],
            stderr=subprocess.PIPE, text=True,
        )
        arrivals: dict[str, dict[str, int]] = {}
        lineage = arrivals.setdefault("training_on_unprotected_data", {})
        stop, ready = threading.Event(), threading.Event()
        receiver = threading.Thread(target=collect, args=(broker, alerts_topic, arrivals, stop, ready))
        receiver.start()
        try:
            trails = [AuditTrail(f"bench-serving-{i}", log_dir=tmp, bootstrap_servers=broker, topic=events_topic,
                                 user="svc") for i in range(args.trails)]
            ready.wait(30)
            while not lineage:  # the alerter has joined its group and answers
                produce(trails, 1000, 0.5, 100)
                for trail in trails:
                    trail.flush()
            time.sleep(1.0)
            warm_up = len(lineage)
            events, trainings, reads, achieved = produce(trails, args.rate, args.seconds, args.train_every)
            for trail in trails:  # every partition passes the last trainings
                trail.log_model_inference("churn-v1", "last", "stay", 0.9)
                trail.close()
            deadline = time.monotonic() + 30
            while sum(t in lineage for t in trainings) < len(trainings) and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            stop.set()
            receiver.join()
            alerter.terminate()
            _, errors = alerter.communicate(timeout=60)
        times, by_id = read_back(broker, events_topic)
    after_watermark, after_training, early, never = [], [], 0, 0
    for training in trainings:
        arrived, passed = lineage.get(training), passed_at(times, by_id[training])
        if arrived is None or passed is None:
            never += 1
            continue
        after_watermark.append((arrived - passed) / 1000)
        after_training.append((arrived - by_id[training]) / 1000)
        early += arrived < passed
    purposeless = arrivals.get("access_without_purpose", {})
    floor = [(purposeless[r] - by_id[r]) / 1000 for r in reads if r in purposeless]
    cut, own, single = percentiles(after_watermark), percentiles(after_training), percentiles(floor)
    print(json.dumps({
        "events": events, "target_rate": args.rate, "achieved_rate": round(achieved),
        "partitions": args.partitions, "partitions_with_events": sum(bool(s) for s in times.values()),
        "trainings": len(trainings), "lineage_alerts_received": len(after_watermark),
        "missing_alerts": never, "warm_up_alerts": warm_up,
        "after_watermark_ms": {"p50": round(cut[49], 1), "p90": round(cut[89], 1), "p99": round(cut[98], 1),
                               "max": round(max(after_watermark), 1) if after_watermark else None},
        "after_training_ms": {"p50": round(own[49], 1), "p99": round(own[98], 1)},
        "same_run_single_event_alert_ms": {"alerts": len(floor), "p50": round(single[49], 1),
                                           "p99": round(single[98], 1)},
        "p50_lineage_vs_single_event": round(cut[49] / single[49], 2) if single[49] else None,
        "p99_lineage_vs_single_event": round(cut[98] / single[98], 2) if single[98] else None,
        "alerts_before_the_watermark_passed": early,
        "p99_target_200ms_met": cut[98] <= 200,
        "alerter": errors.strip().splitlines()[-1:] if errors else [],
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
