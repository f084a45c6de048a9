"""Bench: what ``from secureml.audit import AuditTrail`` costs a model server, and what the CLI costs to start.

Runs fresh interpreters alternately: ``python -c pass`` (the baseline), ``python -c "from
secureml.audit import AuditTrail"``, the same with ``get_audit_logs`` (which loads the
consumer side), and ``secureml-audit --help`` and ``secureml-audit query --help`` (the
dispatcher, and one subcommand's parser), and reports median wall times, each one's own cost
over the bare interpreter, and what ``-X importtime`` attributes to the secureml modules
AuditTrail loads. Also lists the heavy libraries loaded.

    .venv/bin/python bench/bench_import.py [--runs 21]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

HEAVY = ("pyarrow", "numpy", "duckdb", "polars", "deltalake", "pandas", "cryptography")
CASES = {
    "bare": "pass",
    "audit_trail": "from secureml.audit import AuditTrail",
    "with_readers": "from secureml.audit import AuditTrail, get_audit_logs",
    "cli_help": "import sys; sys.argv[1:] = ['--help']; from secureml.audit.cli import main; main()",
    "cli_query_help": "import sys; sys.argv[1:] = ['query', '--help']; from secureml.audit.cli import main; main()",
}


def wall(code: str) -> float:
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], stdout=subprocess.DEVNULL, check=False)
    if done.returncode not in (0,):
        raise SystemExit(f"bench: {code!r} exited {done.returncode}")
    return time.perf_counter() - began


def importtime_us() -> int:
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", CASES["audit_trail"]],
                         capture_output=True, text=True, check=True).stderr
    # Top-level lines (no indentation before the name) of secureml modules: their cumulative times.
    cumulative = [raw.split("|") for raw in out.splitlines() if raw.startswith("import time:")]
    return sum(int(parts[1]) for parts in cumulative if parts[2].startswith(" secureml"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    samples: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(args.runs):
        for name, code in CASES.items():
            samples[name].append(wall(code))
    probe = f"import sys; {CASES['audit_trail']}; print([m for m in {HEAVY!r} if m in sys.modules])"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    medians = {name: statistics.median(values) * 1000 for name, values in samples.items()}
    result = {
        "runs": args.runs,
        **{f"{name}_ms": round(ms, 1) for name, ms in medians.items()},
        "import_audit_trail_ms": round(medians["audit_trail"] - medians["bare"], 1),
        "import_with_readers_ms": round(medians["with_readers"] - medians["bare"], 1),
        "cli_help_ms": round(medians["cli_help"] - medians["bare"], 1),
        "cli_query_help_ms": round(medians["cli_query_help"] - medians["bare"], 1),
        "importtime_secureml_audit_ms": round(statistics.median(importtime_us() for _ in range(9)) / 1000, 1),
        "heavy_libraries_loaded": loaded,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
