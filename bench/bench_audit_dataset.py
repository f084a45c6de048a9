"""Benchmark: ComplianceAuditor.audit_dataset over a 10M-row table ("seconds, not minutes").

The table (e-mails, SSNs, names, phones, free-text notes, age/ZIP/gender, a reading) is
generated in DuckDB from range() and held as a pyarrow Table. The audit is timed without
an audit trail, with one (log_dir), and on a DuckDB relation over the same data. A
baseline from the same run makes the number mean something on a noisy machine: the same
work done the usual pandas way - a pandas sample of the same size scanned with
``Series.str.contains`` for every detector pattern (without checksum validation, so it
does less), plus a pandas ``groupby`` over the whole table for k-anonymity.

Run: .venv/bin/python bench/bench_audit_dataset.py [--rows 10000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from secureml.compliance import ComplianceAuditor
from secureml.compliance.detectors import DETECTORS

TEXT_COLUMNS = ["email", "ssn", "full_name", "phone", "notes"]
QUASI_IDENTIFIERS = ["age", "zip", "gender"]
FIRST = ["James", "Mary", "Wei", "Olga", "Carlos", "Emma", "Ahmed", "Priya", "Lars", "Sophie"]
LAST = ["Smith", "Johnson", "Chen", "Petrova", "Diaz", "Brown", "Khan", "Patel", "Berg", "Martin"]


def people(rows: int) -> pa.Table:
    """Generate ``rows`` synthetic people with direct identifiers and quasi-identifiers."""
    first = "[" + ", ".join(f"'{name}'" for name in FIRST) + "]"
    last = "[" + ", ".join(f"'{name}'" for name in LAST) + "]"
    return duckdb.connect().sql(f"""
        SELECT
            i AS id,
            lower({first}[1 + i % 10] || '.' || {last}[1 + i // 10 % 10]) || i || '@example.com'
                AS email,
            printf('%03d-%02d-%04d', 100 + i % 800, 1 + i % 99, 1 + i % 9999) AS ssn,
            {first}[1 + i % 10] || ' ' || {last}[1 + i // 10 % 10] AS full_name,
            printf('(%03d) %03d-%04d', 200 + i % 700, i % 1000, i % 10000) AS phone,
            CASE i % 50 WHEN 0 THEN 'paid with 4111 1111 1111 1111'
                        WHEN 1 THEN 'write to a' || i || '@example.org' ELSE 'no remarks' END AS notes,
            18 + i % 80 AS age,
            lpad(CAST(i * 7919 % 99999 AS VARCHAR), 5, '0') AS zip,
            CASE WHEN i % 2 = 0 THEN 'F' ELSE 'M' END AS gender,
            (i % 1000) / 10.0 AS reading
        FROM range({rows}) t(i)
    """).to_arrow_table()


def timed(action: Callable[[], object], repeat: int) -> tuple[float, list[float]]:
    """Return the median seconds of ``repeat`` calls of ``action``, and every sample."""
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples), samples


def pandas_baseline(frame: pd.DataFrame, sample_rows: int) -> None:
    """Do the audit's scanning the usual pandas way: str.contains on a sample, groupby on all."""
    sample = frame.sample(n=min(sample_rows, len(frame)), random_state=42)
    for column in TEXT_COLUMNS:
        for detector in DETECTORS:
            sample[column].str.contains(detector.pattern, regex=True, na=False).sum()
    frame.groupby(QUASI_IDENTIFIERS, observed=True).size().min()


def main() -> int:
    """Generate the table, time the audits and the baseline, print the results as JSON."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sample-rows", type=int, default=100_000)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="This pattern is interpreted as a regular expression")

    started = time.perf_counter()
    table = people(args.rows)
    print(f"generated {table.num_rows:,} rows in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    frame = table.select(TEXT_COLUMNS + QUASI_IDENTIFIERS).to_pandas()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-compliance-"))
    try:
        plain = ComplianceAuditor("GDPR", sample_rows=args.sample_rows)
        recorded = ComplianceAuditor("GDPR", log_dir, sample_rows=args.sample_rows)
        report = plain.audit_dataset(table, "people")
        relation = duckdb.connect().from_arrow(table)

        audit, audit_samples = timed(lambda: plain.audit_dataset(table, "people"), args.repeat)
        with_trail, _ = timed(lambda: recorded.audit_dataset(table, "people"), args.repeat)
        on_relation, _ = timed(lambda: plain.audit_dataset(relation, "people"), args.repeat)
        baseline, _ = timed(lambda: pandas_baseline(frame, args.sample_rows), args.repeat)
        result = {
            "rows": table.num_rows,
            "sample_rows": args.sample_rows,
            "audit_s": round(audit, 3),
            "audit_samples_s": [round(sample, 3) for sample in audit_samples],
            "audit_rows_per_s": round(table.num_rows / audit),
            "audit_with_trail_s": round(with_trail, 3),
            "audit_duckdb_relation_s": round(on_relation, 3),
            "pandas_baseline_s": round(baseline, 3),
            "speedup_vs_pandas_baseline": round(baseline / audit, 2),
            "issues": report.summary()["issues_by_severity"],
            "failed_checks": report.summary()["failed_checks"],
        }
        print(json.dumps(result, indent=2))
        return 0
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
