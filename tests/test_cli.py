"""The secureml-audit command: demo, materialize, query in every format, clear errors."""

from __future__ import annotations

import csv
import io
import json

from conftest import Harness, run_cli
from secureml.audit import AuditTrail


def test_demo_runs_the_workflow_and_summarises(tmp_path) -> None:  # noqa: ANN001
    """`secureml-audit demo` logs, materialises and prints counts that match the lake."""
    result = run_cli("demo", "--log-dir", str(tmp_path / "demo"), "--inferences", "300")
    assert result.returncode == 0, result.stderr
    assert "model_inference=300" in result.stdout
    assert "operation credit_risk_scoring: 304 events, status completed" in result.stdout
    assert "failed: ['purpose_limitation']" in result.stdout
    assert "integrity: intact" in result.stdout


def test_query_formats(embedded: Harness) -> None:
    """query prints the same events as a table, as JSON and as CSV."""
    with AuditTrail("cli_op", **embedded.options()) as trail:
        trail.log_data_access("customers", ["email"], 10, "support", user="bob")
    base = ("query", "--log-dir", str(embedded.log_dir), "--operation-name", "cli_op")
    as_json = json.loads(run_cli(*base, "--format", "json").stdout)
    assert [e["event_type"] for e in as_json] == ["audit_started", "data_access", "audit_closed"]
    assert as_json[1]["columns_accessed"] == ["email"]
    rows = list(csv.DictReader(io.StringIO(run_cli(*base, "--format", "csv").stdout)))
    assert [r["event_type"] for r in rows] == ["audit_started", "data_access", "audit_closed"]
    assert json.loads(rows[1]["columns_accessed"]) == ["email"]
    table = run_cli(*base, "--user", "bob")
    assert "data_access" in table.stdout and "1 event(s)" in table.stderr


def test_bad_filter_is_reported_not_raised(embedded: Harness) -> None:
    """A bad --start-time exits 2 (bad input) with one line naming the call and the field."""
    AuditTrail("x", **embedded.options()).close()
    result = run_cli("query", "--log-dir", str(embedded.log_dir), "--start-time", "noon")
    assert result.returncode == 2 and "get_audit_logs: invalid 'start_time'" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_materialize_once_embedded(embedded: Harness) -> None:
    """materialize --once on the embedded log reports what it stored."""
    with AuditTrail("cli_mat", **embedded.options()) as trail:
        trail.log_model_inference("m", "r", 1)
    result = run_cli("materialize", "--log-dir", str(embedded.log_dir), "--once", "--bootstrap-servers", "")
    assert result.returncode == 0 and "done: 3 events" in result.stderr


def test_every_subcommand_has_a_description_and_every_option_a_help_text() -> None:
    """`secureml-audit CMD --help` explains the command and each option; --start/--end wherever times are taken."""
    import argparse

    from secureml.audit.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert len(sub.choices) >= 12
    problems = []
    for name, command in sorted(sub.choices.items()):
        if not command.description:
            problems.append(f"{name}: no description")
        for action in command._actions:
            if not isinstance(action, argparse._HelpAction) and not action.help:
                problems.append(f"{name} {'/'.join(action.option_strings) or action.dest}: no help")
        flags = {flag for action in command._actions for flag in action.option_strings}
        problems += [f"{name}: {old} without {new}" for old, new in (("--start-time", "--start"),
                                                                       ("--end-time", "--end"))
                     if old in flags and new not in flags]
    assert not problems, problems
    helps = [choice.help for choice in sub._choices_actions]
    assert all(helps) and len(helps) == len(sub.choices)
