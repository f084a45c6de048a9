"""Benchmark: peak RSS and rate of every whole-lake command over a lake of 1M-10M real events.

The events are logged through AuditTrail into the embedded log (so every hash and chain is
real) and materialised once (measured: the baseline every rate is compared with). Then each
command runs in a child process of its own, so its peak RSS (``ru_maxrss``) is its own:
verify, the first signed checkpoint, compaction, a report, retention apply and an export.
With --lake DIR the built lake is kept there and reused (10M events take several minutes to
log); the commands that change a lake then run on a fresh copy of it. Target (issue 11): peak
RSS bounded by batch size, not lake size; verify <= 500 MB at 10M events and >= 2x the
materializer's rate. With --baseline SRC (a source tree holding ``producer/`` and ``consumers/``,
e.g. ``git archive main producer consumers``), each of the compact and retention steps runs
first with that code, then with this one, each on a fresh copy of the lake: same-run ratios.

Run: .venv/bin/python bench/bench_memory.py [--events 10000000] [--lake DIR] [--steps verify ...]
     [--baseline SRC]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_verify import log_events

from secureml.integrity.keys import SIGNING_KEY_ENV

RSS_TARGET_MB = 500
# In this order: verify needs the checkpoint, compaction and retention change the lake.
STEPS = ("materialize", "checkpoint", "verify", "report", "export", "compact", "retention")
CHANGING = ("checkpoint", "compact", "retention")  # the steps that change the lake: each runs on a fresh copy

# Each step in a child: its result as JSON on the last line, with its own peak RSS.
CHILD = """
import json, resource, sys, time
from pathlib import Path
step, log_dir, key, out = sys.argv[1:5]
began = time.perf_counter()
result = {}


def cli(*arguments):
    from secureml.audit.cli import main
    status = main(list(arguments))
    if status != 0:
        raise SystemExit(f"secureml-audit {arguments[0]} exited with {status}")


if step == "materialize":
    from secureml.lake.table import Lake
    from secureml.materializer.runner import Materializer
    from secureml.stream.sources import EmbeddedSource
    stats = Materializer(Lake(Path(log_dir)), EmbeddedSource(Path(log_dir))).run(once=True)
    result = {"events": stats.events}
elif step == "verify":
    from secureml.integrity import verify
    from secureml.integrity.keys import public_key_path
    verified = verify(log_dir, public_key=public_key_path(Path(key)))
    result = {"events": verified.events, "ok": verified.ok, "summary": None if verified.ok else verified.summary()}
elif step == "checkpoint":
    from secureml.integrity import LakeCheckpointer
    from secureml.integrity.keys import generate_key
    from secureml.lake.table import Lake
    generate_key(Path(key))
    LakeCheckpointer(Path(key), create_key=False).checkpoint(Lake(Path(log_dir)))
elif step == "compact":  # the day's partition as a closed day: rewritten in (operation_name, timestamp) order
    import datetime as dt
    from secureml.lake.table import Lake
    tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).date().isoformat()
    result = {"files_replaced": Lake(Path(log_dir)).compact_all(today=tomorrow)}
elif step == "report":
    cli("report", "--log-dir", log_dir, "--output", out + ".pdf", "--quiet")
elif step == "export":
    cli("export", "--format", "ocsf", "--sink", "file:" + out + ".ocsf.jsonl", "--log-dir", log_dir)
    result = {"mb_written": round(Path(out + ".ocsf.jsonl").stat().st_size / 2**20)}
elif step == "retention":  # judged a year on: the default policy expires every inference (about 80%)
    import datetime as dt
    from secureml.retention import apply_retention
    applied = apply_retention(log_dir, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=365))
    result = {"expired": applied.events, "signed": applied.signed}
result["seconds"] = time.perf_counter() - began
usage = resource.getrusage(resource.RUSAGE_SELF)
result["cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 2)  # what load on a shared machine does not inflate
result["peak_rss_mb"] = round(usage.ru_maxrss / 1024)
print(json.dumps(result, default=str))
"""


def step(name: str, log_dir: Path, key: Path, code: Path | None = None) -> dict:
    """Run one step in a child process (with the source tree ``code`` when given); its JSON result."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECUREML_AUDIT_")}
    env[SIGNING_KEY_ENV] = str(key)  # never the home directory's key
    if code is not None:
        env["PYTHONPATH"] = f"{code / 'producer'}:{code / 'consumers'}"
    began = time.monotonic()
    output = key.parent.parent / name  # what a report or an export writes: outside the log directory
    out = subprocess.run([sys.executable, "-c", CHILD, name, str(log_dir), str(key), str(output)],
                         env=env, capture_output=True, text=True, timeout=4 * 3600)
    if out.returncode != 0:
        raise SystemExit(f"bench: {name} failed:\n{out.stderr[-3000:]}")
    result = json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])  # not a progress bar
    result["load"] = round(os.getloadavg()[0], 1)
    label = name if code is None else f"{name} (baseline {code})"
    print(f"bench: {label} ({time.monotonic() - began:.0f} s): {result}", file=sys.stderr, flush=True)
    return result


def median_run(results: list[dict]) -> dict:
    """The run of median CPU time (the measure load inflates least)."""
    return sorted(results, key=lambda r: r["cpu_seconds"])[len(results) // 2]


def rated(result: dict, events: int) -> dict:
    """A step's result with its rate over the lake's events."""
    return result | {"events_per_s": round(events / result["seconds"])}


def fresh_copy(source: Path, target: Path) -> None:
    """A copy of a built log directory to run the commands that change it on, so the built one is reused as is.

    Parquet files and log segments, never changed in place (only added or deleted), are hard
    links; everything else (Delta log, catalog, offsets) is copied.
    """
    shutil.rmtree(target.parent, ignore_errors=True)

    def link_or_copy(src: str, dst: str) -> None:
        if src.endswith(".parquet") or f"{os.sep}log{os.sep}" in src.removeprefix(str(source)):
            os.link(src, dst)
        else:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link_or_copy)


def main() -> int:
    """Build (or reuse) the lake, run each command in a child, print peak RSS and rates as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--lake", type=Path, help="build the lake here once and reuse it in later runs")
    parser.add_argument("--steps", nargs="*", choices=STEPS, default=list(STEPS), help="the commands to run")
    parser.add_argument("--baseline", type=Path, metavar="SRC",
                        help="run every step with this source tree too, alternating with this one")
    parser.add_argument("--repeat", type=int, default=1, help="run the steps this many times (medians reported)")
    args = parser.parse_args()
    work = args.lake or Path(tempfile.mkdtemp(prefix="bench-memory-"))
    built = work / "built.json"
    try:
        if not built.exists():
            started = time.perf_counter()
            log_events(work / "logs", args.events, "", "")
            print(f"bench: logged {args.events:,} events in {time.perf_counter() - started:.0f} s", file=sys.stderr)
            built.write_text(json.dumps({"events": args.events, "materialize": step(
                "materialize", work / "logs", work / "keys" / "signing_key.pem")}))
        lake = json.loads(built.read_text())
        events, materialized = lake["events"], lake["materialize"]
        run = work / "run"
        fresh_copy(work / "logs", run / "logs")
        # The materializer's rate when the lake was built, unless measured again in this run (step materialize).
        report: dict[str, object] = {"events": events, "materialize": rated(materialized, events)}
        key = run / "keys" / "signing_key.pem"

        def once(name: str, code: Path | None) -> dict:
            if name == "materialize":  # again, in this run: the log alone, into an empty lake
                shutil.copytree(work / "logs" / "log", work / "again" / "logs" / "log", copy_function=os.link)
                try:
                    return rated(step(name, work / "again" / "logs", work / "again" / "keys" / "signing_key.pem",
                                      code), events)
                finally:
                    shutil.rmtree(work / "again", ignore_errors=True)
            if name in CHANGING:
                fresh_copy(work / "logs", run / "logs")
            return rated(step(name, run / "logs", key, code), events)

        runs: dict[str, list[dict]] = {}
        try:
            for repeat in range(args.repeat):
                for name in args.steps:
                    # Alternating which code goes first, so neither always meets the same moment of the load.
                    codes = [None] if args.baseline is None else \
                        [args.baseline, None] if repeat % 2 == 0 else [None, args.baseline]
                    for code in codes:
                        runs.setdefault(name if code is None else f"{name}_baseline", []).append(once(name, code))
        finally:
            shutil.rmtree(run, ignore_errors=True)
        for label, results in runs.items():
            report[label] = median_run(results)
            if args.repeat > 1:
                report[f"{label}_runs"] = results
        for name in args.steps:
            if f"{name}_baseline" in report:
                ours, baseline = report[name], report[f"{name}_baseline"]
                assert isinstance(ours, dict) and isinstance(baseline, dict)
                report[f"ratio_{name}_rate_vs_baseline"] = round(ours["events_per_s"] / baseline["events_per_s"], 2)
                report[f"ratio_{name}_cpu_vs_baseline"] = round(baseline["cpu_seconds"] / ours["cpu_seconds"], 2)
                report[f"ratio_{name}_rss_vs_baseline"] = round(ours["peak_rss_mb"] / baseline["peak_rss_mb"], 2)
        if "verify" in report:
            verify = report["verify"]
            assert isinstance(verify, dict)
            if not verify["ok"]:
                print(json.dumps(verify["summary"], indent=2), file=sys.stderr)
                return 2
            ratio = verify["events_per_s"] / report["materialize"]["events_per_s"]  # type: ignore[index]
            report["ratio_verify_vs_materialize"] = round(ratio, 2)
            materialized_cpu = report["materialize"].get("cpu_seconds")  # type: ignore[union-attr]
            if materialized_cpu:  # the same ratio in CPU time (when the materializer ran in this run)
                report["cpu_ratio_verify_vs_materialize"] = round(materialized_cpu / verify["cpu_seconds"], 2)
            report["verify_meets_target"] = ratio >= 2 and verify["peak_rss_mb"] <= RSS_TARGET_MB
            baseline = report.get("verify_baseline")
            if isinstance(baseline, dict) and "materialize_baseline" in report:  # the baseline's own ratios
                materialized = report["materialize_baseline"]
                assert isinstance(materialized, dict)
                report["baseline_ratio_verify_vs_materialize"] = round(
                    baseline["events_per_s"] / materialized["events_per_s"], 2)
                report["baseline_cpu_ratio_verify_vs_materialize"] = round(
                    materialized["cpu_seconds"] / baseline["cpu_seconds"], 2)
        print(json.dumps(report, indent=2))
        return 0
    finally:
        if args.lake is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
