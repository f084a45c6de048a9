"""Hardening of erase (issue 10 item 1): every bad argument of erase_subject and `secureml-audit erase` is a
clear error naming the call, the field and the rule, and nothing is half-done: no key destroyed, no event logged.

The bad values are the logging calls' own (tests/test_hardening.py), generated per argument.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_hardening import TEXT_BAD
from test_privacy import log_one_subject

from secureml.audit import AuditConfigError, AuditError, AuditValidationError, erase_subject, get_audit_logs

OPTIONAL = ("reason", "legal_basis", "erased_by", "bootstrap_servers", "topic")
CASES: list[tuple[str, Any]] = [("subject", value) for value in [None, *TEXT_BAD]] + [
    (field, value) for field in OPTIONAL for value in TEXT_BAD
]


def test_there_are_many_bad_erase_inputs() -> None:
    """The generated cases cover every argument of erase_subject."""
    assert len(CASES) > 60 and {field for field, _ in CASES} == {"subject", *OPTIONAL}


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One log dir holding a subject's encrypted values (shared: a refused erase must leave it as it is)."""
    log_dir = tmp_path_factory.mktemp("erase") / "logs"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SECUREML_AUDIT_KEYSTORE_DIR", str(log_dir.parent / "keystore"))
        log_one_subject(log_dir)
    return log_dir


@pytest.fixture
def keystore_of(logged: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tests read the shared log dir with the key store it was written with."""
    monkeypatch.setenv("SECUREML_AUDIT_KEYSTORE_DIR", str(logged.parent / "keystore"))
    return logged


@pytest.mark.parametrize(("field", "value"), CASES, ids=[f"{f}-{i}" for i, (f, _) in enumerate(CASES)])
def test_bad_erase_argument_is_refused_and_destroys_nothing(keystore_of: Path, field: str, value: Any) -> None:
    """AuditValidationError naming erase_subject, the field and the rule; the key and the events stay."""
    logged = keystore_of
    events_before = len(get_audit_logs(log_dir=logged))
    arguments: dict[str, Any] = {"subject": "user_12345", field: value}
    with pytest.raises(AuditValidationError) as caught:
        erase_subject(log_dir=logged, **arguments)
    error = caught.value
    assert isinstance(error, AuditError) and error.field == field and error.where == "erase_subject"
    assert error.rule and error.rule in str(error) and field in str(error)
    logs = get_audit_logs(log_dir=logged)
    assert len(logs) == events_before
    assert [log["input_data"] for log in logs if log["event_type"] == "model_inference"] == ["user_12345 features"]


def test_a_regular_file_as_erase_log_dir_is_a_configuration_error(tmp_path: Path) -> None:
    """erase_subject with log_dir naming a file is an AuditConfigError, not a driver exception."""
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(AuditConfigError, match="log_dir"):
        erase_subject("user_12345", not_a_dir)


@pytest.mark.parametrize("arguments", [["--subject", ""], ["--subject", "   "], ["--subject", "s", "--reason", ""],
                                       ["--subject", "s", "--legal-basis", " "], ["--subject", "s", "--by", ""]])
def test_bad_erase_command_line_is_one_line_and_exit_2(keystore_of: Path, arguments: list[str]) -> None:
    """`secureml-audit erase` with a bad argument: one line on stderr, exit 2, no traceback; nothing erased."""
    logged = keystore_of
    done = subprocess.run([sys.executable, "-m", "secureml.audit.cli", "erase", "--log-dir", str(logged), *arguments],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.strip().count("\n") <= 1, done.stderr
    inferences = [log for log in get_audit_logs(log_dir=logged) if log["event_type"] == "model_inference"]
    assert [log["input_data"] for log in inferences] == ["user_12345 features"]
