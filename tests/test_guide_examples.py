"""The user guide's audit examples run unchanged, on the embedded log and on Kafka, with equal results;
scripts/check-guide holds them to the guide's text; no test reads outside the repository."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, Harness, unique_topic
from guide import ALL, run_logging_examples

CHECK_GUIDE = REPO / "scripts" / "check-guide"

VOLATILE = {"event_id", "operation_id", "operation_start", "timestamp", "hash", "prev_hash",
            "producer_host", "producer_pid"}


def guide_text(examples: dict[str, str]) -> str:
    """A guide as the text format gives it: prose, then each example's lines without indentation."""
    return "\n".join(f"Prose about {name}.\n" + "\n".join(line.strip() for line in snippet.splitlines())
                     for name, snippet in examples.items())


def check_guide(guide: Path) -> subprocess.CompletedProcess[str]:
    """Run scripts/check-guide on a guide file."""
    return subprocess.run([sys.executable, str(CHECK_GUIDE), str(guide)], capture_output=True, text=True,
                          timeout=60, check=False)


def test_check_guide_accepts_the_examples_text(tmp_path: Path) -> None:
    """scripts/check-guide passes a guide that holds every example, prose in between, indentation lost."""
    guide = tmp_path / "guide.txt"
    guide.write_text(guide_text(ALL), encoding="utf-8")
    result = check_guide(guide)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"all {len(ALL)} examples" in result.stdout


def test_check_guide_names_the_example_and_line_that_differ(tmp_path: Path) -> None:
    """An example line the guide does not hold fails the check, naming the example and that line."""
    guide = tmp_path / "guide.txt"
    guide.write_text(guide_text(ALL).replace("num_records=5000,", "num_records=500,"), encoding="utf-8")
    result = check_guide(guide)
    assert result.returncode == 1
    assert "create_and_log" in result.stderr and "num_records=5000," in result.stderr
    assert "decorator" not in result.stderr


def test_check_guide_without_the_guide_says_so(tmp_path: Path) -> None:
    """A guide path that does not exist exits 2 with a message naming it."""
    result = check_guide(tmp_path / "absent.txt")
    assert result.returncode == 2 and "absent.txt" in result.stderr


def points_outside_the_repository(path: Path, line: str) -> bool:
    """True when a line of a file under tests/ names the user guide's place, this machine's paths, or climbs
    above the repository with Path(__file__).parents[n] (n >= the file's depth below the root)."""
    # Spelled so that this file does not match itself.
    if re.search(r"\.\./shared|(?<![\w.])/wor[k]\b", line):
        return True
    depth = len(path.relative_to(REPO).parts)  # for tests/x.py, 2: parents of index 2 and up lie outside
    return any(int(n) >= depth for n in re.findall(r"parents\[(\d+)\]", line))


def test_no_test_reads_outside_the_repository() -> None:
    """No file under tests/ points outside the repository (the guide, this machine's paths): a clone runs anywhere."""
    found = [f"{path.relative_to(REPO)}:{number}: {line.strip()}"
             for path in sorted((REPO / "tests").rglob("*")) if path.is_file() and "__pycache__" not in path.parts
             for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
             if points_outside_the_repository(path, line)]
    assert found == []


def run_guide(harness: Harness, monkeypatch: pytest.MonkeyPatch, workdir: Path) -> dict[str, Any]:
    """Run the logging and retrieval examples in workdir on the harness's transport; return what they produced."""
    workdir.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(workdir)
    harness.use_environment(monkeypatch)
    return run_logging_examples({}, harness.sync)


def normalised(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Logs without the fields that differ between runs (ids, times, hashes, producer)."""
    out = []
    for log in logs:
        log = {k: v for k, v in log.items() if k not in VOLATILE}
        if log["event_type"] in ("function_return", "error", "audit_closed") and log.get("details"):
            log["details"] = {k: v for k, v in log["details"].items() if k != "execution_time"}
        out.append(log)
    return out


def check_recorded_trail(result: dict[str, Any]) -> None:
    """The guide's trail as get_audit_logs returns it: envelope, typed payload, gapless seq, chained hashes."""
    assert result["guide_query"] == []  # the guide's filters name a made-up id and 2023 dates
    trail = result["trail"]
    assert [log["event_type"] for log in trail] == [
        "audit_started", "data_access", "data_transformation", "model_training", "model_inference",
        "compliance_check", "user_request", "audit_closed",
    ]
    assert [log["seq"] for log in trail] == list(range(8))
    assert trail == result["by_name"]
    for previous, log in zip(trail, trail[1:]):
        assert log["prev_hash"] == previous["hash"]
        assert log["timestamp"] >= previous["timestamp"] and log["timestamp"].endswith("+00:00")
    access = trail[1]
    assert access["columns_accessed"] == ["income", "credit_score", "loan_history"]
    assert access["num_records"] == 5000 and isinstance(access["num_records"], int)
    assert access["user"] == "analyst_123" and access["purpose"] == "model_training"
    assert all(log["context"] == {"app_version": "1.0.0"} for log in trail)
    assert all(log["regulations"] == ["GDPR", "CCPA"] for log in trail)
    assert trail[2]["parameters"]["quasi_identifiers"] == ["age", "zipcode", "gender"]
    assert trail[3]["privacy_parameters"] == {"epsilon": 1.0, "delta": 1e-5}
    assert trail[4]["output"] == "high_risk" and trail[4]["confidence"] == 0.85
    assert trail[5]["result"] is True and trail[5]["details"]["columns_after"] == 10
    assert trail[6]["user_id"] == "user_12345" and trail[6]["status"] == "completed"
    assert trail[7]["status"] == "completed" and trail[7]["event_count"] == 8
    assert trail[7]["details"]["output_location"] == "models/credit_risk_v1.pkl"


def check_decorated_call(decorated: list[dict[str, Any]]) -> None:
    """The decorated function's trail: call, the NameError its body raises, and an error close."""
    assert [log["event_type"] for log in decorated] == ["audit_started", "function_call", "error", "audit_closed"]
    call = decorated[1]
    assert call["function_name"] == "process_sensitive_data"
    assert call["arguments"] == {"data": {"type": "list", "size": 3}, "anonymize": {"type": "bool"}}
    assert "3, 1, 2" not in str(decorated)  # argument values are not recorded by default
    assert decorated[2]["error_type"] == "NameError" and "processed_data" in decorated[2]["message"]
    assert decorated[3]["status"] == "error" and decorated[-1]["regulations"] == ["GDPR"]


def test_guide_examples(harness: Harness, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The guide's trail is recorded in full: envelope, typed payload, gapless seq, chained hashes."""
    check_recorded_trail(run_guide(harness, monkeypatch, tmp_path))


def test_decorated_call_records_the_exception(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The guide's decorated function raises NameError: call, error and error close are recorded."""
    check_decorated_call(run_guide(harness, monkeypatch, tmp_path)["decorated"])


def test_same_results_on_both_transports(kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """get_audit_logs gives the same answers whether events went through Kafka or the embedded log."""
    results = {}
    for kind in ("embedded", "kafka"):
        workdir = tmp_path / kind
        harness = Harness(kind, workdir / "audit_logs", kafka_bootstrap if kind == "kafka" else "",
                          unique_topic())
        with monkeypatch.context() as patch:
            results[kind] = run_guide(harness, patch, workdir)
        os.chdir(tmp_path)
    for key in ("guide_query", "trail", "decorated", "by_name"):
        assert normalised(results["embedded"][key]) == normalised(results["kafka"][key]), key
    assert len(results["kafka"]["trail"]) == 8
