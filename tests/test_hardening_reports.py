"""Hardening (issue 10 item 1) of ComplianceAuditor, ReportGenerator and `secureml-audit report`.

Bad arguments are generated per field kind (hundreds of cases), like the logging calls' sweep
in test_hardening.py: each must raise an error under AuditError whose message names the public
call, the field and the rule, never a driver's exception, and leave no file behind (no partial
report, no temporary file). On the command line the same inputs are one line on stderr, exit 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from support.reporting import make_logo

from secureml.audit import AuditError, AuditTrail
from secureml.compliance import ComplianceAuditor
from secureml.reporting import ReportGenerator


def _deep(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def _dataset() -> pd.DataFrame:
    return pd.DataFrame({"email": ["a@example.com", "b@example.com"], "age": [34, 45]})


TEXT_BAD: list[Any] = [None, "", "   ", 5, 2.5, True, b"bytes", ["list"], {"a": 1}, "x\ud800", "\udfff", "ok\udc80ok"]
BOOL_BAD: list[Any] = ["yes", 1, 0, "True", 1.0, [True]]
INT_BAD: list[Any] = [-1, 0, 1, 2**63, 2**70, 2.5, float("nan"), float("inf"), True, "5", None, [5]]
LIST_BAD: list[Any] = ["age", b"ab", 5, [1], ["ok", None], ["a", "\ud800"], [["nested"]], {"a": 1},
                      ["c"] * 10_001, [""]]
NUMBER_BAD: list[Any] = [-1.0, 0, float("nan"), float("inf"), -float("inf"), "small", [0.5], True, 2**1100]
MAPPING_BAD: list[Any] = [5, "s", [1, 2], b"x", {1: "x"}, {("t",): 1}, _deep(1000), {"k": "\ud800"}, {"\ud800": 1},
                          {"k": object()}]
TEXT_OR_BOOL_BAD: list[Any] = [5, 2.5, [1], {"a": 1}, "", "x\ud800", b"x"]

# ComplianceAuditor(**{field: bad}); the rule each field follows.
AUDITOR_FIELDS: dict[str, list[Any]] = {
    "regulation": ["SOX", "", None, 5, ["GDPR"], b"GDPR", "GD\ud800PR", "GDPR\x00"],
    "k_threshold": INT_BAD,
    "sample_rows": [x for x in INT_BAD if x != 1],
    "user": [x for x in TEXT_BAD if x is not None],
    "topic": [5, "bad topic!", "x" * 300, ["t"], "\ud800"],
    "producer_config": ["acks=all", ["acks", "all"], {"acks": object()}, {"": "x"}, {1: "x"}],
    "log_dir": [5, b"\x00", ["d"], "\x00dir"],
}
METADATA_FIELDS: dict[str, list[Any]] = {
    "purpose": TEXT_BAD[1:], "legal_basis": TEXT_BAD[1:], "data_storage_location": TEXT_BAD[1:],
    "required_columns": LIST_BAD, "quasi_identifiers": [*LIST_BAD, ["no_such_column"]],
    "consent_obtained": BOOL_BAD, "encryption": TEXT_OR_BOOL_BAD, "access_controls": TEXT_OR_BOOL_BAD[:4],
    "retention_period": [2.5, [1], {"a": 1}, "", "\ud800", -1, 2**70],
    "special_category_condition": ["magic", 5, "", [1]],
}
MODEL_FIELDS: dict[str, list[Any]] = {
    "trained_on_personal_data": BOOL_BAD, "automated_decision": BOOL_BAD, "human_review": BOOL_BAD,
    "training_data_anonymised": BOOL_BAD, "supports_forget_request": BOOL_BAD,
    "explainability": TEXT_BAD[1:], "retention_period": [2.5, [1], "", "\ud800", -1, 2**70],
    "access_controls": TEXT_OR_BOOL_BAD, "privacy_parameters": MAPPING_BAD[:4],
    "privacy_parameters.epsilon": NUMBER_BAD, "privacy_parameters.delta": [-0.1, 1, 1.5, float("nan"),
                                                                             float("inf"), "x", [0.1], True],
}
STEP_FIELDS: dict[str, list[Any]] = {
    "name": TEXT_BAD, "type": ["teleport", "", 5, None, ["source"], "\ud800"],
    "legal_basis": TEXT_BAD[1:], "destination": TEXT_BAD[1:],
    "contains_personal_data": BOOL_BAD, "encrypted": BOOL_BAD,
}
NAME_BAD = TEXT_BAD


class Made:
    """A value built when the case runs (DataFrames with bad content cannot all be built at collection)."""

    def __init__(self, make: Any, shown: str) -> None:
        self.make, self.shown = make, shown

    def __repr__(self) -> str:
        return self.shown


BAD_DATASETS: list[Any] = [
    None, 5, "csv", [{"email": "a"}], {"email": ["a"]},
    Made(pd.DataFrame, "empty DataFrame"), Made(lambda: pa.table({}), "empty Table"),
]
GOOD_STEP = {"name": "load", "type": "source"}


def _nested(field: str, value: Any) -> dict[str, Any]:
    """{"a": {"b": value}} for the field "a.b"."""
    head, _, rest = field.partition(".")
    return {head: _nested(rest, value) if rest else value}


def _auditor_cases() -> list[tuple[str, str, Any]]:
    """(call, field, bad value) for every field of every ComplianceAuditor entry point."""
    cases: list[tuple[str, str, Any]] = []
    for field, values in AUDITOR_FIELDS.items():
        cases += [("ComplianceAuditor", field, v) for v in values]
    cases += [("ComplianceAuditor.audit_dataset", "dataset_name", v) for v in NAME_BAD]
    cases += [("ComplianceAuditor.audit_dataset", "dataset", v) for v in BAD_DATASETS]
    cases += [("ComplianceAuditor.audit_dataset", "metadata", v) for v in MAPPING_BAD[:4]]
    for field, values in METADATA_FIELDS.items():
        cases += [("ComplianceAuditor.audit_dataset", f"metadata.{field}", v) for v in values]
    cases += [("ComplianceAuditor.audit_model", "model_name", v) for v in NAME_BAD]
    cases += [("ComplianceAuditor.audit_model", "model_config", v) for v in MAPPING_BAD[:4]]
    for field, values in MODEL_FIELDS.items():
        cases += [("ComplianceAuditor.audit_model", f"model_config.{field}", v) for v in values]
    cases += [("ComplianceAuditor.audit_pipeline", "pipeline_name", v) for v in NAME_BAD]
    cases += [("ComplianceAuditor.audit_pipeline", "pipeline_steps", v)
              for v in [None, [], "load", 5, {"name": "x"}, [5], ["step"], [None], [{}], [GOOD_STEP] * 10_001]]
    for field, values in STEP_FIELDS.items():
        cases += [("ComplianceAuditor.audit_pipeline", f"pipeline_steps.{field}", v) for v in values]
    return cases


def _call_auditor(call: str, field: str, value: Any, tmp_path: Path) -> object:
    """Run the named call with one bad field and good values everywhere else."""
    if isinstance(value, Made):
        value = value.make()
    if call == "ComplianceAuditor":
        return ComplianceAuditor(**{field: value})
    auditor = ComplianceAuditor("GDPR")
    if call.endswith("audit_dataset"):
        arguments: dict[str, Any] = {"dataset": _dataset(), "dataset_name": "patients", "metadata": {}}
        top, _, rest = field.partition(".")
        arguments[top] = _nested(rest, value) if rest else value
        return auditor.audit_dataset(**arguments)
    if call.endswith("audit_model"):
        arguments = {"model_config": {}, "model_name": "m"}
        top, _, rest = field.partition(".")
        arguments[top] = _nested(rest, value) if rest else value
        return auditor.audit_model(**arguments)
    arguments = {"pipeline_steps": [GOOD_STEP], "pipeline_name": "p"}
    top, _, rest = field.partition(".")
    arguments[top] = [GOOD_STEP, {**GOOD_STEP, rest: value}] if rest else value
    return auditor.audit_pipeline(**arguments)


def _field_shown(field: str) -> list[str]:
    """How a message may name a field: 'metadata.purpose' as metadata['purpose'] or purpose."""
    parts = field.split(".")
    return [parts[0] + "".join(f"['{p}']" for p in parts[1:]), parts[-1]]


AUDITOR_CASES = _auditor_cases()


def _assert_names_call_field_rule(error: BaseException, call: str, field: str) -> None:
    assert isinstance(error, AuditError), f"{type(error).__module__}.{type(error).__name__}: {error}"
    message = str(error)
    assert call in message, message
    assert any(shown in message for shown in _field_shown(field)), message
    rule = message.split(":", 1)[-1].strip()
    assert len(rule) > 10, message


def test_there_are_hundreds_of_bad_inputs_for_the_auditor_and_the_reports() -> None:
    """The generated cases cover every argument of ComplianceAuditor and of ReportGenerator."""
    assert len(AUDITOR_CASES) > 250
    assert len(REPORT_CASES) > 150
    assert {c for c, _, _ in AUDITOR_CASES} == {"ComplianceAuditor", "ComplianceAuditor.audit_dataset",
                                               "ComplianceAuditor.audit_model", "ComplianceAuditor.audit_pipeline"}


@pytest.mark.parametrize(("call", "field", "value"), AUDITOR_CASES,
                         ids=[f"{c.rsplit('.', 1)[-1]}-{f}-{i}" for i, (c, f, _) in enumerate(AUDITOR_CASES)])
def test_bad_argument_to_the_auditor_names_the_call_the_field_and_the_rule(
    call: str, field: str, value: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every bad argument to ComplianceAuditor is an AuditError naming call, field and rule; nothing written."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Exception) as caught:  # noqa: PT011 - the assertion below names the class it must be
        _call_auditor(call, field, value, tmp_path)
    _assert_names_call_field_rule(caught.value, call, field)
    assert list(tmp_path.iterdir()) == []


# ReportGenerator: the events as get_audit_logs returns them, with one field made bad.
EVENT = {
    "event_id": "e1", "operation_id": "op", "operation_name": "train", "seq": 0, "event_type": "audit_started",
    "level": 20, "timestamp": "2026-01-02T03:04:05+00:00", "user": "ann", "regulations": ["GDPR"],
    "context": {}, "details": {}, "prev_hash": "", "hash": "ab",
}
EVENT_FIELDS: dict[str, list[Any]] = {
    "seq": ["x", -1, 2**70, 2.5, [1], float("nan")],
    "level": ["LOUD", 2**70, [1], 2.5],
    "timestamp": ["yesterday", "2026-13-01", 5, [1], "99999-01-01", "", "\ud800"],
    "operation_id": [5, [1], {"a": 1}, "\ud800"],
    "operation_name": [5, ["x"], "\ud800"],
    "event_type": [5, ["x"], "\ud800"],
    "user": [5, ["x"], "\ud800"],
    "details": [object(), _deep(1000), {"k": "\ud800"}],
    "regulations": ["GDPR", 5, [5], ["\ud800"]],
    "num_records": [-1, 2**63, "5", 2.5], "confidence": ["high", float("nan"), float("inf"), True],
    "result": ["yes", 1], "operation_start": ["soon", 5], "dataset_name": [5, "\ud800"],
    "execution_time": ["fast", float("inf")], "event_count": [-1, "x"],
}
FILTERS_BAD: dict[str, list[Any]] = {
    "operation_name": [5, ["x"], b"x"], "operation_id": [5, ["a"]], "event_type": [5, [1], b"x"],
    "user": [5, [1]], "start_time": ["yesterday", "99999-01-01", 5, "2026-13-01", "0001-01-01T00:00:00+05:00"],
    "end_time": ["2026-13-01", 5.5, [1]], "log_dir": [5, ["d"], "\x00x"], "limit": [1],
    "unknown_key": ["x"],
}
COMPLIANCE_REPORT_BAD: list[Any] = [
    None, 5, "report", [1], {"issues": 5}, {"issues": "x"}, {"warnings": {"a": 1}}, {"checks": 5},
    {"passed_checks": 2.5}, {"name": "\ud800"}, {"issues": [{"description": "\ud800"}]}, {"summary": _deep(1000)},
    {"issues": [{"severity": object()}]}, {"issues": [_deep(1000)]},
]
OUTPUT_BAD: list[Any] = [5, None, ["r.pdf"], "r.txt", "r", "", "missing/r.pdf", "r.pdf\x00.html", ".", "dir.pdf"]
TITLE_BAD: list[Any] = [5, ["t"], b"t", "t\ud800", {"a": 1}, 2.5, "x" * 100_001]
LOGO_BAD: list[Any] = [5, ["l.png"], "missing.png", "notes.png", "dir.pdf", "\x00.png", b"\xff.png"]
CHARTS_BAD: list[Any] = ["yes", 1, None, [True], 2.5]


def _report_cases() -> list[tuple[str, str, Any]]:
    audit, compliance = "ReportGenerator.generate_audit_report", "ReportGenerator.generate_compliance_report"
    cases: list[tuple[str, str, Any]] = []
    cases += [(audit, "logs", v) for v in [5, "logs", b"x", [5], [None], [[1]], 2.5, object()]]
    for field, values in EVENT_FIELDS.items():
        cases += [(audit, f"logs.{field}", v) for v in values]
    for field, values in FILTERS_BAD.items():
        cases += [(audit, f"filters.{field}", v) for v in values]
    cases += [(compliance, "report", v) for v in COMPLIANCE_REPORT_BAD]
    for call in (audit, compliance):
        cases += [(call, "output_file", v) for v in OUTPUT_BAD]
        cases += [(call, "title", v) for v in TITLE_BAD]
        cases += [(call, "logo_path", v) for v in LOGO_BAD]
        cases += [(call, "include_charts", v) for v in CHARTS_BAD]
    return cases


REPORT_CASES = _report_cases()


def _call_report(call: str, field: str, value: Any, tmp_path: Path) -> object:
    """Run one ReportGenerator call with one bad field, good values elsewhere, inside tmp_path."""
    (tmp_path / "dir.pdf").mkdir()
    (tmp_path / "notes.png").write_text("not an image")
    make_logo(tmp_path / "logo.png")
    arguments: dict[str, Any] = {"output_file": "r.pdf", "title": "T", "logo_path": "logo.png", "include_charts": True}
    top, _, rest = field.partition(".")
    generator = ReportGenerator(progress=False)
    if call.endswith("generate_audit_report"):
        if top == "logs":
            arguments["logs"] = [EVENT, {**EVENT, "seq": 1, rest: value}] if rest else value
        elif top == "filters":
            AuditTrail("x", log_dir=tmp_path / "lake").close()
            arguments["logs"] = {"log_dir": str(tmp_path / "lake"), rest: value}
        else:
            arguments["logs"] = [EVENT]
            arguments[top] = value
        return generator.generate_audit_report(**arguments)
    arguments["report"] = {"name": "patients", "regulation": "GDPR", "issues": [], "checks": []}
    arguments[top] = value
    return generator.generate_compliance_report(**arguments)


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if "lake" not in p.parts}


@pytest.mark.parametrize(("call", "field", "value"), REPORT_CASES,
                         ids=[f"{c.rsplit('_', 2)[-2]}-{f}-{i}" for i, (c, f, _) in enumerate(REPORT_CASES)])
def test_bad_argument_to_the_report_generator_names_the_call_the_field_and_the_rule(
    call: str, field: str, value: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every bad argument to ReportGenerator is an AuditError naming call, field and rule; no file is left."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Exception) as caught:  # noqa: PT011 - the assertion below names the class it must be
        _call_report(call, field, value, tmp_path)
    _assert_names_call_field_rule(caught.value, call, field)
    assert _files(tmp_path) == {"dir.pdf", "notes.png", "logo.png"}, "a report or temporary file was left"


CLI_BAD: list[tuple[list[str], str]] = [
    (["--output", "r.txt"], "--output"),
    (["--output", "missing/r.pdf"], "--output"),
    (["--output", "r.pdf", "--start", "yesterday"], "--start"),
    (["--output", "r.pdf", "--end", "2026-13-01"], "--end"),
    (["--output", "r.pdf", "--start", "2026-02-01", "--end", "2026-01-01"], "--start"),
    (["--output", "r.pdf", "--logo", "missing.png"], "--logo"),
    (["--output", "r.pdf", "--logo", "notes.png"], "--logo"),
    (["--output", "r.pdf", "--title", "x" * 501], "--title"),
    (["--output", "r.pdf", "--log-dir", "nowhere"], "--log-dir"),
    (["--output-dir", "out", "--every", "sometimes", "--once"], "--every"),
    (["--output-dir", "out", "--every", "1d", "--once", "--grace", "nan"], "--grace"),
    (["--output-dir", "out", "--every", "1d", "--once", "--grace", "-1"], "--grace"),
    (["--output", "r.html", "--format", "pdf"], "--format"),
]


@pytest.mark.parametrize(("args", "option"), CLI_BAD, ids=[o + str(i) for i, (_, o) in enumerate(CLI_BAD)])
def test_report_command_refuses_bad_input_in_one_line_with_exit_2(tmp_path: Path, args: list[str],
                                                                   option: str) -> None:
    """`secureml-audit report` with a bad option: one line on stderr naming it, exit 2, no traceback, no file."""
    AuditTrail("x", log_dir=tmp_path / "lake").close()
    (tmp_path / "notes.png").write_text("not an image")
    arguments = ["--log-dir", str(tmp_path / "lake"), *args] if "--log-dir" not in args else args
    env = {**os.environ, "SECUREML_AUDIT_LOG_DIR": str(tmp_path / "lake")}
    env.pop("SECUREML_AUDIT_BOOTSTRAP_SERVERS", None)
    done = subprocess.run([sys.executable, "-m", "secureml.audit.cli", "report", "--quiet", *arguments],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert option.lstrip("-").split("-")[0] in lines[0], lines[0]
    assert not (tmp_path / "r.pdf").exists() and not (tmp_path / "r.html").exists()
