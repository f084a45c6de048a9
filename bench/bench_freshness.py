"""Bench: freshness in Kafka mode, from a log call to the event being visible in get_audit_logs.

A producer logs ``--rate`` events/s for ``--seconds`` (one trail, flushed every 0.1 s as a
model server's background flush would); a materializer service (its own process, ``--commit-
interval`` seconds between commits) writes them into the lake; a reader polls
``get_audit_logs(operation_id=..., start_time=...)`` (from a second before the oldest event not
seen yet) for the newest seq it can see. Each event's latency is
the time from its log call until the first poll that shows it; ``committed_*`` is the part
until the Delta commit that stored it (from the commit times in the table's log). Runs once per commit
interval given, on fresh topics, and reports p50/p99/max per interval, with how long each poll
of get_audit_logs took (part of every latency). The materializer signs checkpoints, as a
deployment's does, every ``--checkpoint-interval`` seconds (default 5, so that several fall in
the window; a deployment's default is 60).

    .venv/bin/python bench/bench_freshness.py [--rate 10000] [--seconds 20] [--commit-interval 0.5 0.2]
        [--checkpoint-interval 5] [--repeat 1] [--baseline REV]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from _common import bootstrap
from secureml.audit import AuditTrail, get_audit_logs
from secureml.integrity.keys import generate_key


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def committed_at(log_dir: Path) -> list[tuple[int, float]]:
    """(highest seq, commit wall time) of every append to the lake, from its Delta log, in order.

    After the warm-up trail's two events only the measured trail writes, so the largest ``seq``
    in an append's file statistics is the newest event that commit made visible.
    """
    commits = []
    for path in sorted((log_dir / "lake" / "events" / "_delta_log").glob("*.json")):
        actions = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        info = next((a["commitInfo"] for a in actions if "commitInfo" in a), {})
        if info.get("operation") != "WRITE":
            continue  # a compaction or the maintenance lease: nothing new becomes visible
        seqs = [json.loads(a["add"]["stats"])["maxValues"]["seq"] for a in actions if "add" in a]
        if seqs:
            commits.append((max(seqs), info["timestamp"] / 1000))
    return commits


def run(broker: str, rate: int, seconds: float, commit_interval: float, checkpoint_interval: float,
        code: Path | None = None) -> dict[str, object]:
    """One measurement; ``code``: the source tree of another revision's materializer (--baseline)."""
    topic = f"bench-fresh-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        key = Path(tmp) / "key" / "signing_key.pem"
        generate_key(key)
        env = {**os.environ, **({"PYTHONPATH": f"{code / 'producer'}:{code / 'consumers'}"} if code else {}),
               "SECUREML_AUDIT_SIGNING_KEY": str(key), "SECUREML_AUDIT_CHECKPOINT_INTERVAL": str(checkpoint_interval)}
        log_dir = Path(tmp) / "audit"
        AuditTrail("warm-up", log_dir=log_dir, bootstrap_servers=broker, topic=topic).close()  # creates the topic
        materializer = subprocess.Popen(
            [sys.executable, "-m", "secureml.audit.cli", "materialize", "--log-dir", str(log_dir),
             "--bootstrap-servers", broker, "--topic", topic, "--group", f"fresh-{topic}",
             "--commit-interval", str(commit_interval)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=env)
        try:
            deadline = time.monotonic() + 120
            while get_audit_logs(log_dir=log_dir, output="arrow").num_rows < 2:  # the service is up
                assert time.monotonic() < deadline and materializer.poll() is None, "the materializer did not start"
                time.sleep(0.1)
            logged_wall = time.time()
            trail = AuditTrail("freshness", log_dir=log_dir, bootstrap_servers=broker, topic=topic)
            logged: list[float] = [time.monotonic()]  # seq 0 (audit_started)
            walls: list[float] = [logged_wall]  # wall clock of each log call, to ask only for what is new
            total = int(rate * seconds)
            done = threading.Event()

            def produce() -> None:
                began = time.monotonic()
                last_flush = began
                for i in range(total):
                    target = began + i / rate
                    pause = target - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
                    trail.log_model_inference("m", f"req-{i}", "ok", 0.5)
                    logged.append(time.monotonic())
                    walls.append(time.time())
                    if logged[-1] - last_flush >= 0.1:
                        trail.flush(0)  # serve delivery reports; the producer sends on its own (linger 5 ms)
                        last_flush = logged[-1]
                trail.flush(30)
                done.set()

            producer = threading.Thread(target=produce)
            producer.start()
            latencies: list[float] = []
            queries: list[float] = []  # how long each poll of get_audit_logs took: part of every latency
            seen = 0  # seqs below this are visible
            stop_at = time.monotonic() + seconds + 60
            while (seen <= total) and time.monotonic() < stop_at:
                # Only the events not seen yet (from a second before the oldest of them), as a dashboard
                # following the trail would ask: reading every row again would time the reading.
                since = dt.datetime.fromtimestamp(walls[min(seen, len(walls) - 1)] - 1.0, dt.UTC)
                asked = time.monotonic()
                table = get_audit_logs(operation_id=trail.operation_id, start_time=since, log_dir=log_dir,
                                       output="arrow")
                now = time.monotonic()
                queries.append(now - asked)
                newest = max(table["seq"].to_pylist(), default=-1) + 1
                for seq in range(seen, min(newest, len(logged))):
                    latencies.append(now - logged[seq])
                seen = max(seen, min(newest, len(logged)))
                time.sleep(0.02)
            producer.join()
            trail.close()
        finally:
            materializer.send_signal(signal.SIGTERM)
            materializer.wait(120)
        # The part of each latency spent before the commit that stored the event (the rest: the reader).
        stored: list[float] = []
        for newest, at in committed_at(log_dir):
            for seq in range(len(stored), min(newest + 1, len(walls))):
                stored.append(at - walls[seq])
    return {
        "materializer": "baseline" if code else "this tree",
        "commit_interval_s": commit_interval, "checkpoint_interval_s": checkpoint_interval, "events": len(latencies),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 1), "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "max_ms": round(max(latencies) * 1000, 1),
        "committed_p50_ms": round(percentile(stored, 0.5) * 1000, 1),
        "committed_p99_ms": round(percentile(stored, 0.99) * 1000, 1),
        "query_p50_ms": round(percentile(queries, 0.5) * 1000, 1),
        "query_p99_ms": round(percentile(queries, 0.99) * 1000, 1),
        "load_average": round(os.getloadavg()[0], 1),
    }


def medians(results: list[dict[str, object]]) -> list[dict[str, object]]:
    """The median of every measure over the repeats of one materializer and commit interval."""
    groups: dict[tuple[object, object], list[dict[str, object]]] = {}
    for result in results:
        groups.setdefault((result["materializer"], result["commit_interval_s"]), []).append(result)
    return [{"materializer": who, "commit_interval_s": interval, "repeats": len(runs),
             **{name: statistics.median(float(r[name]) for r in runs)  # type: ignore[arg-type]
                for name in runs[0] if name.endswith("_ms") or name == "load_average"}}
            for (who, interval), runs in groups.items()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, default=10_000, help="events per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--commit-interval", type=float, nargs="+", default=[0.5, 0.2])
    parser.add_argument("--repeat", type=int, default=1, help="runs per commit interval (and materializer)")
    parser.add_argument("--checkpoint-interval", type=float, default=5.0,
                        help="seconds between the materializer's signed checkpoints")
    parser.add_argument("--baseline", metavar="REV", help="also run this git revision's materializer, alternating")
    args = parser.parse_args()
    broker = bootstrap()
    with tempfile.TemporaryDirectory() as tmp:
        code = None
        if args.baseline:
            code = Path(tmp)
            archive = subprocess.run(["git", "-C", str(Path(__file__).resolve().parents[1]), "archive", args.baseline],
                                     check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        results = []
        for interval in args.commit_interval:
            for repeat in range(args.repeat):
                # Alternating which goes first, so neither always meets the same moment of the machine's load.
                for tree in [None] if code is None else [None, code] if repeat % 2 == 0 else [code, None]:
                    results.append(run(broker, args.rate, args.seconds, interval, args.checkpoint_interval, tree))
    print(json.dumps({"rate": args.rate, "seconds": args.seconds, "runs": results, "medians": medians(results)},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
