"""Bench: the materializer from Kafka against a bare confluent-kafka consumer, same topic, same run.

Logs N inference events once into a fresh topic of ``--partitions`` partitions, then, alternating
``--repeat`` times, each in a fresh child process: a bare ``Consumer.consume(num_messages=...)``
with the materializer's consumer settings that reads every message and drops it (the limit of
reading the topic here; timed from subscribe, so that joining the group counts for both), and the
materializer (``materialize(once=True)``, a signing key, a fresh lake). Then 2 materializer
instances in one group sharing one lake (the scale-out deployment), one partition each, against
1 instance (same topic, a fresh lake and group each time), the --baseline revision's too.
Reports events/s and the ratios (median of the repeats).

    .venv/bin/python bench/bench_materialize_kafka.py [--events 500000] [--repeat 3] [--baseline REV] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _common import baseline_code, bootstrap, log_inferences, median

BARE = """
import json, resource, sys, time
from confluent_kafka import Consumer
broker, topic, expected, settings = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
consumer = Consumer({**settings, "bootstrap.servers": broker, "group.id": "bare-" + str(time.time()),
                     "enable.partition.eof": False})
began, seen, total_bytes = time.perf_counter(), 0, 0
consumer.subscribe([topic])
while seen < expected:
    messages = consumer.consume(num_messages=50_000, timeout=0.1)
    for message in messages:
        if message.error() is None:
            seen += 1
            total_bytes += len(message.value())
seconds, usage = time.perf_counter() - began, resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"events": seen, "seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime}))
consumer.close()
"""

MATERIALIZE = """
import json, resource, sys, time
from secureml.materializer import materialize
log_dir, broker, topic, group, instance = sys.argv[1:6]
profile = len(sys.argv) > 6
if profile:
    from pyinstrument import Profiler
    profiler = Profiler(interval=0.002)
    profiler.start()
began = time.perf_counter()
stats = materialize(log_dir, bootstrap_servers=broker, topic=topic, group=group, instance_id=instance, once=True)
seconds = time.perf_counter() - began
if profile:
    profiler.stop()
    sys.stderr.write(profiler.output_text(unicode=False, color=False, show_all=False))
usage = resource.getrusage(resource.RUSAGE_SELF)
from secureml.audit import accelerator
print(json.dumps({"events": stats.events, "seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime,
                  "native": accelerator.native is not None}))
"""


def child(code: str, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE,
                            stderr=None if "--profile" in args else subprocess.PIPE, text=True)


def result(proc: subprocess.Popen[str]) -> dict[str, float]:
    out, err = proc.communicate(timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"bench: a child failed:\n{(err or '')[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def materialize_rate(root: Path, broker: str, topic: str, instances: int, env: dict[str, str],
                     profile: bool = False, code: Path | None = None, cpu: list[float] | None = None) -> float:
    """Events/s of ``instances`` materializers in one group sharing one lake, wall clock of the slowest
    (their CPU time per event, whole processes with imports, appended to ``cpu``)."""
    group = f"bench-{uuid.uuid4().hex[:8]}"
    if code is not None:  # an earlier revision's materializer (--baseline), with its own build of the accelerator
        env = {**env, "PYTHONPATH": f"{code / 'site'}:{code / 'producer'}:{code / 'consumers'}"}
    began = time.perf_counter()
    procs = [child(MATERIALIZE, str(root / group), broker, topic, group, f"{group}-{i}",
                   *(["--profile"] if profile else []), env=env) for i in range(instances)]
    results = [result(p) for p in procs]
    if not all(r.get("native", True) for r in results):
        # (a revision written for another interface of the accelerator than the one installed runs without it)
        print(f"bench: WARNING: the {'baseline ' if code else ''}materializer ran without the native accelerator "
              "(pure-Python decoding): its rate is not comparable", file=sys.stderr)
    events = sum(int(r["events"]) for r in results)
    slowest = max(r["seconds"] for r in results)
    used = sum(r["cpu_seconds"] for r in results) / events * 1e6
    if cpu is not None:
        cpu.append(used)
    print(f"bench: {instances} materializer(s){' (baseline)' if code else ''}: {events:,} events in {slowest:.2f}s "
          f"(wall {time.perf_counter() - began:.1f}s incl. start), {used:.2f} us CPU/event, "
          f"load {os.getloadavg()[0]:.1f}", file=sys.stderr)
    return events / slowest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="print a pyinstrument profile of one materializer")
    parser.add_argument("--baseline", metavar="REV", help="also run this git revision's materializer, alternating")
    args = parser.parse_args()
    broker = bootstrap()
    topic = f"bench-matk-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SECUREML_AUDIT_")}
        env["SECUREML_AUDIT_PARTITIONS"] = str(args.partitions)
        env["SECUREML_AUDIT_SIGNING_KEY"] = str(root / "key" / "signing_key.pem")
        os.environ["SECUREML_AUDIT_PARTITIONS"] = str(args.partitions)
        from secureml.integrity.keys import generate_key

        generate_key(root / "key" / "signing_key.pem")  # signed checkpoints, as a deployment has them
        log_inferences(args.events, root / "producer", broker, topic)
        if args.profile:
            materialize_rate(root, broker, topic, 1, env, profile=True)
            return 0
        code = baseline_code(root, args.baseline) if args.baseline else None
        from secureml.stream.kafka import CONSUMER_DEFAULTS

        # The materializer's own consumer settings (fetch sizes, prefetch), so that the bare consumer is the limit
        # of reading the topic the way it does; only the group and partition-EOF events differ.
        bare_settings = {k: v for k, v in CONSUMER_DEFAULTS.items() if k != "enable.partition.eof"}
        bare: list[float] = []
        ours: list[float] = []
        base: list[float] = []
        bare_cpu: list[float] = []
        ours_cpu: list[float] = []
        base_cpu: list[float] = []
        for _ in range(args.repeat):
            if code is not None:
                base.append(materialize_rate(root, broker, topic, 1, env, code=code, cpu=base_cpu))
            measured = result(child(BARE, broker, topic, str(args.events), json.dumps(bare_settings), env=env))
            bare.append(measured["events"] / measured["seconds"])
            bare_cpu.append(measured["cpu_seconds"] / measured["events"] * 1e6)
            print(f"bench: bare consumer: {bare[-1]:,.0f}/s, {bare_cpu[-1]:.2f} us CPU/event", file=sys.stderr)
            ours.append(materialize_rate(root, broker, topic, 1, env, cpu=ours_cpu))
        two: list[float] = []
        base_two: list[float] = []
        for _ in range(args.repeat):
            if code is not None:
                base_two.append(materialize_rate(root, broker, topic, 2, env, code=code))
            two.append(materialize_rate(root, broker, topic, 2, env))
        report: dict[str, object] = {
            "events": args.events, "partitions": args.partitions,
            "bare_consumer_events_per_s": round(median(bare)),
            "materializer_events_per_s": round(median(ours)),
            "materializer_vs_bare_consumer": round(median([o / b for o, b in zip(ours, bare)]), 2),
            "bare_consumer_cpu_us_per_event": round(median(bare_cpu), 2),
            "materializer_cpu_us_per_event": round(median(ours_cpu), 2),
            "two_instances_events_per_s": round(median(two)),
            "two_instances_vs_one": round(median(two) / median(ours), 2),
        }
        if base:
            report["baseline"] = args.baseline
            report["baseline_events_per_s"] = round(median(base))
            report["materializer_vs_baseline"] = round(median([o / b for o, b in zip(ours, base)]), 2)
            report["baseline_cpu_us_per_event"] = round(median(base_cpu), 2)
            report["cpu_ratio_vs_baseline"] = round(median([o / b for o, b in zip(ours_cpu, base_cpu)]), 2)
            report["baseline_two_instances_vs_one"] = round(median(base_two) / median(base), 2)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
