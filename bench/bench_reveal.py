"""Bench: get_audit_logs as dicts on a lake of real events logged with the privacy policy on (issue 11 item 3).

The events are logged through AuditTrail with the default policy (every inference's ``input_data`` sealed
per subject as ``enc:v1:<pseudonym>:<base64>``, users as ``ps_`` pseudonyms) and materialised, as
bench_verify builds them; the key store is readable, so the dicts show the values as logged. Each
measurement runs in a child process of its own: one get_audit_logs as dicts over a time range holding about
each of --rows rows (the whole lake when that is all of it), after one warm-up query, timed by CPU time
(``process_time``) and wall time; then the same query --warm more times in that process, each result dropped
before the next (as bench_query.py times large results: the memory a result freed is reused, where the first
query of a process takes fresh pages from the kernel). With --baseline REV that revision's code (``git
archive``, its own build of the accelerator beside it, so each side calls the native module it was written for)
runs the same queries in alternating children: the ratios are medians of each round's pairs. Before timing, both sides'
dicts of the smallest range are checked equal (classes, keys in order, values, ``sealed``).

    .venv/bin/python bench/bench_reveal.py [--events 1000000] [--lake DIR] [--rows 100000,1000000]
        [--rounds 3] [--warm 2] [--baseline main]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_verify import build

from _common import baseline_code

ROOT = Path(__file__).resolve().parents[1]

# One query in a child: its rows, CPU and wall seconds, and (with a digest asked for) a hash of the exact dicts.
CHILD = """
import hashlib, json, os, statistics, sys, time
from secureml.audit import accelerator, get_audit_logs
from secureml.audit.privacy.reveal import RevealedEvent
log_dir, start, end, digest = sys.argv[1], sys.argv[2] or None, sys.argv[3] or None, sys.argv[4] == "1"
warm = int(sys.argv[5])
get_audit_logs(log_dir=log_dir, limit=1000)  # warm: the catalog, the key store, the modules
load = os.getloadavg()[0]
times = []
for _ in range(1 + warm):
    logs = None  # the last result dropped first, as a loop of queries drops it
    cpu, wall = time.process_time(), time.perf_counter()
    logs = get_audit_logs(log_dir=log_dir, start_time=start, end_time=end)
    times.append((time.process_time() - cpu, time.perf_counter() - wall))
cpu, wall = times[0]
result = {"rows": len(logs), "cpu_seconds": round(cpu, 3), "seconds": round(wall, 3), "load": round(load, 2),
          "native": accelerator.native is not None,
          "revealed": sum(isinstance(log, RevealedEvent) for log in logs)}
if warm:
    result["warm_cpu_seconds"] = round(statistics.median_low(c for c, _ in times[1:]), 3)
    result["warm_seconds"] = round(statistics.median_low(w for _, w in times[1:]), 3)
if digest:
    def exact(value):
        if isinstance(value, dict):
            return (type(value).__name__, [(k, exact(v)) for k, v in value.items()])
        if isinstance(value, (list, tuple)):
            return (type(value).__name__, [exact(v) for v in value])
        return (type(value).__name__, repr(value))
    hashed = hashlib.sha256()
    for log in logs:
        hashed.update(repr((exact(log), exact(getattr(log, "sealed", None)))).encode())
    result["digest"] = hashed.hexdigest()
print(json.dumps(result))
"""


def query(log_dir: Path, start: str, end: str, code: Path | None, digest: bool = False, warm: int = 0) -> dict:
    """One timed query in a child process (with ``code``'s tree and accelerator when given), then ``warm`` more."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if code is not None:
        env["PYTHONPATH"] = f"{code / 'site'}:{code / 'producer'}:{code / 'consumers'}"
    out = subprocess.run([sys.executable, "-c", CHILD, str(log_dir), start, end, "1" if digest else "0", str(warm)],
                         env=env, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise SystemExit(f"bench: query failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def ranges(log_dir: Path, sizes: list[int]) -> dict[int, tuple[str, str]]:
    """Per size, a time range (ISO text, both ends included) holding about that many events in the middle of the
    lake; the whole lake ("", "") when the size is all of it."""
    from secureml.query.logs import query_events

    times = query_events(None, None, None, None, log_dir, reveal=False).column("timestamp")
    stamps = sorted(times.to_pylist())
    found = {}
    for size in sizes:
        if size >= len(stamps):
            found[size] = ("", "")
            continue
        first = (len(stamps) - size) // 2
        found[size] = (stamps[first].isoformat(), stamps[first + size - 1].isoformat())
    return found


def summary(runs: list[dict]) -> dict:
    """Medians of a side's runs, with the rates they give."""
    rows = runs[0]["rows"]
    cpu = statistics.median(r["cpu_seconds"] for r in runs)
    wall = statistics.median(r["seconds"] for r in runs)
    found = {"rows": rows, "revealed_rows": runs[0]["revealed"], "native": runs[0]["native"],
             "cpu_seconds": round(cpu, 3), "seconds": round(wall, 3), "rows_per_cpu_s": round(rows / cpu),
             "rows_per_s": round(rows / wall), "loads": [r["load"] for r in runs]}
    if "warm_seconds" in runs[0]:
        warm_cpu = statistics.median(r["warm_cpu_seconds"] for r in runs)
        warm_wall = statistics.median(r["warm_seconds"] for r in runs)
        found |= {"warm_cpu_seconds": round(warm_cpu, 3), "warm_seconds": round(warm_wall, 3),
                  "warm_rows_per_cpu_s": round(rows / warm_cpu), "warm_rows_per_s": round(rows / warm_wall)}
    return found


def main() -> int:
    """Build (or reuse) the lake, time the dicts of each range, print the results as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--lake", type=Path, help="build the lake here once and reuse it in later runs")
    parser.add_argument("--rows", default="100000,1000000", help="result sizes (comma-separated)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warm", type=int, default=2, help="the same query again in each child, timed apart")
    parser.add_argument("--baseline", metavar="REV", help="also run this git revision's code, alternating")
    args = parser.parse_args()
    work = args.lake or Path(tempfile.mkdtemp(prefix="bench-reveal-"))
    try:
        log_dir = work / "logs"
        if not (work / "built.json").exists():
            (work / "built.json").write_text(json.dumps(build(work, args.events, "")))
        commit = None if args.baseline is None else subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--verify", f"{args.baseline}^{{commit}}"],
            capture_output=True, text=True, check=True).stdout.strip()
        code = None if commit is None else baseline_code(work, commit)
        sizes = sorted(map(int, args.rows.split(",")))
        spans = ranges(log_dir, sizes)
        report: dict[str, object] = {"events": args.events, "load_average_before": round(os.getloadavg()[0], 2)}
        if code is not None:
            start, end = spans[sizes[0]]
            ours, theirs = query(log_dir, start, end, None, True), query(log_dir, start, end, code, True)
            if ours["digest"] != theirs["digest"]:
                raise SystemExit(f"bench: {args.baseline}'s dicts differ from this tree's ({ours['rows']} rows)")
            report["baseline"] = f"{args.baseline} ({commit})"
            report["same_dicts_as_baseline_rows"] = ours["rows"]
        for size in sizes:
            start, end = spans[size]
            runs: dict[str, list[dict]] = {"ours": [], "baseline": []}
            for round_ in range(args.rounds):
                # Alternating which code goes first, so neither always meets the same moment of the load.
                sides = [("ours", None)] if code is None else \
                    [("ours", None), ("baseline", code)] if round_ % 2 == 0 else [("baseline", code), ("ours", None)]
                for side, tree in sides:
                    runs[side].append(query(log_dir, start, end, tree, warm=args.warm))
                    print(f"bench: {size:,} rows, round {round_}, {side}: {runs[side][-1]}", file=sys.stderr)
            result: dict[str, object] = {"ours": summary(runs["ours"])}
            if code is not None:
                result["baseline"] = summary(runs["baseline"])
                pairs = list(zip(runs["ours"], runs["baseline"]))
                timed = {"cpu": "cpu_seconds", "wall": "seconds"}
                if args.warm:
                    timed |= {"warm_cpu": "warm_cpu_seconds", "warm_wall": "warm_seconds"}
                for name, key in timed.items():
                    result[f"{name}_ratio_vs_baseline"] = round(statistics.median(o[key] / b[key] for o, b in pairs), 3)
            report[f"dicts_{size}"] = result
        report["load_average_after"] = round(os.getloadavg()[0], 2)
        print(json.dumps(report, indent=2))
        return 0
    finally:
        if args.lake is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
