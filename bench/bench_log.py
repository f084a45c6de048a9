"""Bench: log_model_inference throughput, ours (Kafka and embedded) against SecureML 0.3.1, alternating.

Ours into Kafka is measured end to end: acks=all, idempotent, hash-chained, and flushed by
close(), so every event counted is acknowledged by the broker. Each of ours runs with the
privacy policy off and on (a user and one of 1,000 data subjects per event, input_data
encrypted); a bare confluent-kafka produce() of the same ready bytes, with our producer settings,
is the limit on the machine. With the native accelerator installed, ours with the policy off also
runs on its pure-Python path ("_pure": the trail's pure-Python EventChain, no native inference) for a same-run
comparison. Rounds
alternate their order. Also measures the materializer's events/s against a plain consumer reading
the same messages (the ceiling).

    .venv/bin/python bench/bench_log.py [--events 20000] [--rounds 5] [--materialize 500000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from _common import bootstrap, log_inferences, median, secureml_031_audit
from secureml.audit import AuditTrail
from secureml.audit import trail as trail_module

SUBJECTS = 1000
NATIVE_CHAIN = trail_module._native_events  # the accelerator's EventChain, None when it is not installed


def pure_python(run: Callable[[int], float]) -> Callable[[int], float]:
    """run with the trail's pure-Python EventChain (and inference path) instead of the accelerator's."""
    def without_accelerator(r: int) -> float:
        trail_module._native_events = None
        try:
            return run(r)
        finally:
            trail_module._native_events = NATIVE_CHAIN
    return without_accelerator


def run_secureml(module, events: int, directory: Path) -> float:  # noqa: ANN001 - a loaded module
    trail = module.AuditTrail("bench", log_dir=str(directory))
    began = time.perf_counter()
    for i in range(events):
        trail.log_model_inference(model_id="credit_risk_v1", input_data=f"application_{i}", output="low_risk",
                                  confidence=0.87)
    trail.close()
    return events / (time.perf_counter() - began)


def run_ours(events: int, privacy: str | None = "off", **options: object) -> float:
    """events/s of log_model_inference; with the privacy policy on, every event has a user (pseudonymised)
    and a data subject (one of 1,000, keys cached by a warm-up) whose input_data is encrypted."""
    on = privacy != "off"
    trail = AuditTrail("bench", privacy=privacy, user="analyst_1" if on else None, **options)
    began = time.perf_counter()
    if on:
        for i in range(events):
            trail.log_model_inference(model_id="credit_risk_v1", input_data=f"application_{i}", output="low_risk",
                                      confidence=0.87, subject=f"customer_{i % SUBJECTS}")
    else:
        for i in range(events):
            trail.log_model_inference(model_id="credit_risk_v1", input_data=f"application_{i}", output="low_risk",
                                      confidence=0.87)
    report = trail.close()
    elapsed = time.perf_counter() - began
    assert report.ok and report.delivered == events + 2, report
    return events / elapsed


def ready_messages(events: int) -> list[bytes]:
    """Sealed inference events as our trail encodes them (privacy off), for the bare producer."""
    from secureml.audit.testing import capture_events

    with capture_events() as captured:
        trail = AuditTrail("bench", transport=captured.transport, privacy="off", bootstrap_servers="")
        for i in range(events):
            trail.log_model_inference(model_id="credit_risk_v1", input_data=f"application_{i}", output="low_risk",
                                      confidence=0.87)
        trail.close()
        return [value for _key, value in captured.transport.stored][1:-1]


class BareProducer:
    """A bare confluent-kafka producer with our producer settings (acks=all, idempotent), the schema header and
    a delivery callback counting successes: the limit on this machine. Made once and reused, like our trails'
    process-wide producer, so that no round pays for connecting and the idempotent producer id."""

    def __init__(self, broker: str) -> None:
        from confluent_kafka import Producer

        from secureml.audit.transports.kafka import _HEADERS, PRODUCER_DEFAULTS

        self.delivered = 0
        self.headers = _HEADERS
        self.producer = Producer({**PRODUCER_DEFAULTS, "bootstrap.servers": broker, "on_delivery": self._on_delivery})

    def _on_delivery(self, err: object, _msg: object) -> None:
        if err is None:
            self.delivered += 1

    def run(self, messages: list[bytes], topic: str) -> float:
        """events/s of produce() of the ready bytes, flushed."""
        self.delivered = 0
        key = uuid.uuid4().hex.encode()
        produce, poll, headers = self.producer.produce, self.producer.poll, self.headers
        began = time.perf_counter()
        for i, value in enumerate(messages):
            produce(topic, value, key, headers=headers)
            if i % 256 == 255:
                poll(0)
        self.producer.flush(60)
        elapsed = time.perf_counter() - began
        assert self.delivered == len(messages), self.delivered
        return len(messages) / elapsed


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
    rates: dict[str, list[float]] = {"secureml_0.3.1": [], "ours_kafka": [], "ours_kafka_privacy": [],
                                     "ours_embedded": [], "ours_embedded_privacy": [], "bare_kafka_produce": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ.setdefault("SECUREML_AUDIT_KEYSTORE_DIR", str(root / "keystore"))
        messages = ready_messages(args.events)
        topic = f"bench-log-{uuid.uuid4().hex[:8]}"  # its key topic holds keys under this run's key store only
        # Connect, create the topics, and create the subjects' keys (a long-running server has them cached).
        for servers in (broker, ""):
            run_ours(SUBJECTS * 2, None, log_dir=root / "warm", bootstrap_servers=servers, topic=topic)
        bare = BareProducer(broker)
        bare.run(messages, topic)
        runs = {
            "secureml_0.3.1": lambda r: run_secureml(baseline, args.events, root / f"s{r}"),
            "ours_kafka": lambda r: run_ours(args.events, log_dir=root / f"k{r}", bootstrap_servers=broker,
                                             topic=topic),
            "ours_kafka_privacy": lambda r: run_ours(args.events, None, log_dir=root / f"kp{r}",
                                                     bootstrap_servers=broker, topic=topic),
            "ours_embedded": lambda r: run_ours(args.events, log_dir=root / f"e{r}", bootstrap_servers=""),
            "ours_embedded_privacy": lambda r: run_ours(args.events, None, log_dir=root / f"ep{r}",
                                                        bootstrap_servers=""),
            "bare_kafka_produce": lambda r: bare.run(messages, topic),
        }
        if NATIVE_CHAIN is not None:
            runs["ours_kafka_pure"] = pure_python(runs["ours_kafka"])
            runs["ours_embedded_pure"] = pure_python(runs["ours_embedded"])
            rates.update({"ours_kafka_pure": [], "ours_embedded_pure": []})
        ours = [name for name in runs if name.startswith("ours_")]
        # CPU time of the whole process (librdkafka's threads included, the broker's not): under other load the
        # wall clock charges each run for the time others held the cores, the CPU time much less so.
        cpu: dict[str, list[float]] = {name: [] for name in runs}
        for r in range(args.rounds):
            order = list(runs) if r % 2 == 0 else list(reversed(runs))  # alternating: drift hits all alike
            for name in order:
                began_cpu = time.process_time()
                rates[name].append(runs[name](r))
                cpu[name].append((time.process_time() - began_cpu) / args.events)
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in rates.items()),
                  file=sys.stderr)
        result: dict[str, object] = {k: round(median(v)) for k, v in rates.items()}
        peer = median(rates["secureml_0.3.1"])
        for name in ours:
            result[f"ratio_{name.removeprefix('ours_')}_vs_secureml"] = round(median(rates[name]) / peer, 2)
        for name in ("ours_kafka", "ours_kafka_privacy"):
            result[f"ratio_{name.removeprefix('ours_')}_vs_bare_produce"] = round(
                median(rates[name]) / median(rates["bare_kafka_produce"]), 2)
        result.update({f"cpu_us_per_event_{name}": round(median(v) * 1e6, 2) for name, v in cpu.items()})
        for name in ours:
            result[f"cpu_ratio_{name.removeprefix('ours_')}_vs_secureml"] = round(
                median(cpu["secureml_0.3.1"]) / median(cpu[name]), 2)
        for transport in ("kafka", "embedded"):
            result[f"privacy_added_cpu_us_per_event_{transport}"] = round(
                (median(cpu[f"ours_{transport}_privacy"]) - median(cpu[f"ours_{transport}"])) * 1e6, 2)
        for transport in ("kafka", "embedded"):
            off, on = median(rates[f"ours_{transport}"]), median(rates[f"ours_{transport}_privacy"])
            result[f"privacy_added_us_per_event_{transport}"] = round((1 / on - 1 / off) * 1e6, 2)
        if NATIVE_CHAIN is not None:
            for transport in ("kafka", "embedded"):
                result[f"cpu_ratio_{transport}_native_vs_pure"] = round(
                    median(cpu[f"ours_{transport}_pure"]) / median(cpu[f"ours_{transport}"]), 3)
        result["load_average_after"] = os.getloadavg()[0]
        if args.materialize:
            result.update({k: round(v, 2) for k, v in bench_materializer(broker, args.materialize, root / "m").items()})
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
