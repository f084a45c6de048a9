"""Long work shows progress: one throttled mechanism (secureml.progress) for export, verify and reports."""

from __future__ import annotations

import io

from support.export import log_trail

from conftest import Harness, run_cli
from secureml.progress import Progress


class FakeTerminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_progress_is_throttled_and_ends_with_the_total() -> None:
    """Counts print at most once per interval, and always when the total is reached."""
    stream = io.StringIO()
    progress = Progress("export", True, stream=stream, interval=3600)
    for done in range(1, 1001):
        progress.advance(done, 1000)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("[export] 1/1,000 events (0.1%)")
    assert lines[1].startswith("[export] 1,000/1,000 events (100.0%)")


def test_progress_is_on_for_a_terminal_and_off_for_a_pipe() -> None:
    """Without --progress, lines appear only when stderr is a terminal."""
    pipe, terminal = io.StringIO(), FakeTerminal()
    Progress("verify", None, stream=pipe).step("checked")
    Progress("verify", None, stream=terminal).step("checked")
    assert pipe.getvalue() == ""
    assert terminal.getvalue().startswith("[verify] checked (")


def test_verify_shows_progress_when_asked(embedded: Harness) -> None:
    """verify --progress prints '[verify] N/N events' on stderr; without it (not a terminal), nothing."""
    log_trail(embedded.options())
    assert run_cli("materialize", "--log-dir", str(embedded.log_dir), "--once").returncode == 0
    args = ("verify", "--log-dir", str(embedded.log_dir), "--allow-unsigned")
    quiet, loud = run_cli(*args), run_cli(*args, "--progress")
    assert quiet.returncode == loud.returncode == 0, loud.stderr
    assert "[verify]" not in quiet.stderr
    assert "[verify] 12/12 events (100.0%)" in loud.stderr
    assert loud.stdout.startswith("INTACT") and quiet.stdout.startswith("INTACT")  # the same verdict


def test_materialize_reports_with_progress(embedded: Harness) -> None:
    """materialize --once --progress reports what it materialised on stderr."""
    log_trail(embedded.options())
    result = run_cli("materialize", "--log-dir", str(embedded.log_dir), "--once", "--progress")
    assert result.returncode == 0 and "materialized 12 events" in result.stderr
