"""bench/run: runs the benches it is told to and rewrites the results file, keeping earlier runs below."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_bench_run_writes_a_dated_section_on_top_and_keeps_earlier_runs(tmp_path: Path) -> None:
    """A quick run of one bench: its numbers under today's machine line, the older section after it."""
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## 2026-11-28: first wave\n\nold numbers\n")
    done = subprocess.run([sys.executable, str(REPO / "bench" / "run"), "--quick", "--only", "import", "--output",
                           str(results)], capture_output=True, text=True, timeout=600, check=False,
                          env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    text = results.read_text()
    assert text.startswith("# Benchmark results\n\n## ") and "bench/run --quick" in text.splitlines()[2]
    assert "Machine: " in text and " cores" in text
    row = next(line for line in text.splitlines() if line.startswith("| `bench/bench_import.py"))
    assert "`import_audit_trail_ms`" in row and "`heavy_libraries_loaded` []" in row
    assert text.index("bench/run --quick") < text.index("## 2026-11-28: first wave") and "old numbers" in text
    assert "[1/1] bench/bench_import.py" in done.stderr  # progress on stderr


def test_bench_run_reports_a_failing_bench_and_exits_non_zero(tmp_path: Path) -> None:
    """A bench that cannot run is a FAILED row and exit 1, never a silently missing line."""
    results = tmp_path / "RESULTS.md"
    done = subprocess.run([sys.executable, str(REPO / "bench" / "run"), "--only", "import", "--output", str(results)],
                          capture_output=True, text=True, timeout=600, check=False,
                          env={"PYTHON": "/nonexistent/python", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    row = next(line for line in results.read_text().splitlines() if line.startswith("| `bench/bench_import.py"))
    assert "FAILED" in row and "/nonexistent/python" in row and "set PYTHON" in done.stderr
