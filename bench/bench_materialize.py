"""Bench: the materializer into the Delta lake against the first wave's lake, on the same input, same run.

Logs N events once (embedded log, or a Kafka topic), then materialises them with ``--once``
twice in fresh child processes: the first wave's materializer (checked out from git at
``--baseline``, its own manifest-and-Parquet lake) and ours (a Delta table), each into its
own log directory. Reports events/s and peak RSS of each and the ratios. With ``--against REV``
(e.g. main), that revision's materializer runs instead, alternating with ours ``--repeat`` times, each
into a fresh log directory: the same-run ratio of rates and of CPU time (``getrusage``: the child's
threads on both cores).

    .venv/bin/python bench/bench_materialize.py [--events 1000000] [--source embedded|kafka]
        [--against REV [--repeat 3]]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from _common import bootstrap, log_inferences, median

REPO = Path(__file__).resolve().parents[1]
FIRST_WAVE = "21a2e7e"  # the last commit with the manifest lake

CHILD = """
import json, os, resource, sys, time
from secureml.materializer import materialize
began = time.perf_counter()
stats = materialize(sys.argv[1], bootstrap_servers=sys.argv[2] or "", topic=sys.argv[3], group=sys.argv[4])
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"events": stats.events, "seconds": time.perf_counter() - began,
                  "cpu_seconds": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024}))
"""


def run(pythonpath: str | None, log_dir: Path, broker: str, topic: str, key: Path) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECUREML_AUDIT_")}
    env["SECUREML_AUDIT_SIGNING_KEY"] = str(key)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    out = subprocess.run([sys.executable, "-c", CHILD, str(log_dir), broker, topic, f"bench-{uuid.uuid4().hex[:8]}"],
                         env=env, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise SystemExit(f"bench: the materializer failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--source", choices=["embedded", "kafka"], default="embedded")
    parser.add_argument("--baseline", default=FIRST_WAVE, help="git revision of the first wave's lake")
    parser.add_argument("--against", metavar="REV", help="run this revision's materializer (not the first wave's)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of --against and ours")
    args = parser.parse_args()
    broker = bootstrap() if args.source == "kafka" else ""
    topic = f"bench-mat-{uuid.uuid4().hex[:8]}"
    if args.against:
        with tempfile.TemporaryDirectory() as tmp:
            log_inferences(args.events, Path(tmp) / "logged", broker, topic)
            result = {"events": args.events, "source": args.source,
                      **against(args, Path(tmp), Path(tmp) / "logged", broker, topic)}
        print(json.dumps(result, indent=2))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        old_code = root / "first-wave"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(old_code), args.baseline],
                       check=True)
        try:
            source = root / "logged"
            log_inferences(args.events, source, broker, topic)
            dirs = {"first_wave": root / "first_wave", "delta": root / "delta"}
            for directory in dirs.values():
                if args.source == "embedded":
                    shutil.copytree(source / "log", directory / "log")
                else:
                    directory.mkdir()
            result: dict[str, object] = {"events": args.events, "source": args.source}
            old_path = f"{old_code / 'producer'}:{old_code / 'consumers'}"
            for name, pythonpath in (("first_wave", old_path), ("delta", None)):
                measured = run(pythonpath, dirs[name], broker, topic, root / f"{name}-key" / "signing_key.pem")
                assert measured["events"] == args.events, measured
                result[f"{name}_events_per_s"] = round(measured["events"] / measured["seconds"])
                result[f"{name}_peak_rss_mb"] = round(measured["peak_rss_mb"])
                print(f"bench: {name}: {result[f'{name}_events_per_s']:,}/s, "
                      f"{result[f'{name}_peak_rss_mb']} MB", file=sys.stderr)
            result["delta_vs_first_wave_rate"] = round(
                int(result["delta_events_per_s"]) / int(result["first_wave_events_per_s"]), 2)  # type: ignore[call-overload]
            result["delta_vs_first_wave_peak_rss"] = round(
                int(result["delta_peak_rss_mb"]) / int(result["first_wave_peak_rss_mb"]), 2)  # type: ignore[call-overload]
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old_code)], check=False)
    print(json.dumps(result, indent=2))
    return 0


def against(args: argparse.Namespace, root: Path, source: Path, broker: str, topic: str) -> dict[str, object]:
    """``--against``: that revision's materializer and ours, alternating, each into a fresh log directory."""
    code = root / "against"
    code.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", args.against, "producer", "consumers", "schemas"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(code)], input=archive, check=True)
    runs: dict[str, list[dict[str, float]]] = {"against": [], "ours": []}
    for round_ in range(args.repeat):
        for name, pythonpath in (("against", f"{code / 'producer'}:{code / 'consumers'}"), ("ours", None)):
            directory = root / f"{name}-{round_}"
            if args.source == "embedded":
                shutil.copytree(source / "log", directory / "log")
            else:
                directory.mkdir()
            measured = run(pythonpath, directory, broker, topic, root / f"{name}-key" / "signing_key.pem")
            assert measured["events"] == args.events, measured
            runs[name].append(measured)
            shutil.rmtree(directory)
            print(f"bench: {name}: {measured['events'] / measured['seconds']:,.0f}/s, "
                  f"{measured['cpu_seconds'] / measured['events'] * 1e6:.2f} us CPU/event, "
                  f"load {os.getloadavg()[0]:.1f}", file=sys.stderr)
    rates = {name: [r["events"] / r["seconds"] for r in measured] for name, measured in runs.items()}
    cpu = {name: [r["cpu_seconds"] / r["events"] * 1e6 for r in measured] for name, measured in runs.items()}
    return {
        "against": args.against,
        "against_events_per_s": round(median(rates["against"])),
        "ours_events_per_s": round(median(rates["ours"])),
        "ratio_rate_vs_against": round(median([o / b for o, b in zip(rates["ours"], rates["against"])]), 2),
        "against_cpu_us_per_event": round(median(cpu["against"]), 2),
        "ours_cpu_us_per_event": round(median(cpu["ours"]), 2),
        "ratio_cpu_vs_against": round(median([o / b for o, b in zip(cpu["ours"], cpu["against"])]), 2),
    }


if __name__ == "__main__":
    sys.exit(main())
