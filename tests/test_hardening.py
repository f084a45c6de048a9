"""Hardening (issue 10): every bad input a clear error at the call, limits that read back exactly,
audit_function never in the way of the function it wraps, nothing written through a planted link.

Bad arguments are generated per field kind (hundreds of cases); each must raise an error
under AuditError naming the call, the field and the rule, and emit nothing, after which the
same trail goes on gapless. Values at the documented limits are stored and read back exactly
through both transports; one byte, item or level past them is refused the same way in both.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import Harness, run_cli
from secureml.audit import (
    AuditConfigError,
    AuditError,
    AuditTrail,
    AuditValidationError,
    audit_function,
    get_audit_logs,
    verify,
)
from secureml.audit.events import MAX_DEPTH, MAX_EVENT_BYTES, MAX_LEVEL, MAX_LIST_ITEMS, MAX_LONG
from secureml.audit.testing import capture_events
from secureml.materializer import materialize

GOOD: dict[str, dict[str, Any]] = {
    "log_data_access": dict(dataset_name="d", columns_accessed=["a"], num_records=1, purpose="p"),
    "log_data_transformation": dict(transformation_type="t", input_data="i", output_data="o", parameters={}),
    "log_model_training": dict(model_type="m", dataset_name="d", parameters={}, metrics={}, privacy_parameters={}),
    "log_model_inference": dict(model_id="m", input_data="i", output=1, confidence=0.5),
    "log_compliance_check": dict(check_type="c", regulation="GDPR", result=True, details={}),
    "log_user_request": dict(request_type="r", user_id="u", details={}, status="open"),
    "log_error": dict(error_type="E", message="m", details={}),
}
KINDS = {  # field -> kind of rule it follows
    "dataset_name": "text", "purpose": "optional_text", "transformation_type": "text", "input_data": "text",
    "output_data": "text", "model_type": "text", "model_id": "text", "check_type": "text", "regulation": "text",
    "request_type": "text", "user_id": "text", "status": "text", "error_type": "text", "message": "message",
    "user": "optional_text", "columns_accessed": "text_list", "num_records": "count", "parameters": "dict",
    "metrics": "dict", "privacy_parameters": "dict", "details": "dict", "output": "json", "confidence": "probability",
    "result": "boolean", "level": "level",
}


def _deep(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def _nested_list(depth: int) -> list[Any]:
    value: list[Any] = [1]
    for _ in range(depth - 1):
        value = [value]
    return value


TEXT_BAD = ["", "   ", "\n\t", 5, 2.5, True, b"bytes", ["list"], {"a": 1}, "x\ud800", "\udfff", "ok\udc80ok"]
BAD_VALUES: dict[str, list[Any]] = {
    "text": [None, *TEXT_BAD],
    "optional_text": TEXT_BAD,
    "message": ["x\ud800", "\udfff", ValueError("bad \ud800")],  # anything else is recorded as str(message)
    "text_list": ["income", b"ab", 5, None, [""], [1], ["ok", None], ["a", "\ud800"], [["nested"]],
                  ["c"] * (MAX_LIST_ITEMS + 1), {"a"}.__iter__()],
    "count": [-1, -(2**63), 2**63, 2**70, 2.5, float("nan"), float("inf"), True, False, "5", None, [1]],
    "dict": [[1, 2], "s", 5, {1: "x"}, {("t",): 1}, {"k": object()}, {"k": {1, object()}}, _deep(MAX_DEPTH + 1),
             _deep(1000), {"k": "\ud800"}, {"\ud800": 1}, {"k": ["\udfff"]}],
    "json": [object(), {1, object()}, _deep(MAX_DEPTH + 1), _nested_list(MAX_DEPTH + 1), "a\ud800", {"k": "\udfff"}],
    "probability": [1.5, -0.1, 1.0000001, float("nan"), float("inf"), -float("inf"), "high", [0.5], True],
    "boolean": ["yes", 1, 0, None, "True", 1.0],
    "level": [-1, 2**31, MAX_LEVEL + 1, 2**70, "LOUD", "", 2.5, True, None],
}
REQUIRED_NONE_OK = {"purpose", "user", "parameters", "metrics", "privacy_parameters", "details", "output",
                    "confidence"}


def _cases() -> list[tuple[str, str, Any]]:
    cases = []
    for method, good in GOOD.items():
        for field in [*good, "user", "level"]:
            for value in BAD_VALUES[KINDS[field]]:
                if value is None and field in REQUIRED_NONE_OK:
                    continue
                if field == "level" and value is None:
                    continue
                cases.append((method, field, value))
    return cases


CASES = _cases()


def test_there_are_hundreds_of_bad_inputs() -> None:
    """The generated cases cover every field of every logging call."""
    assert len(CASES) > 400
    assert {(m, f) for m, f, _ in CASES} >= {(m, f) for m, good in GOOD.items() for f in good}


@pytest.mark.parametrize(("method", "field", "value"), CASES,
                         ids=[f"{m}-{f}-{i}" for i, (m, f, _) in enumerate(CASES)])
def test_bad_argument_is_refused_at_the_call_and_emits_nothing(method: str, field: str, value: Any) -> None:
    """AuditValidationError naming the call, the field and the rule; nothing emitted; the trail goes on."""
    with capture_events() as captured:
        trail = AuditTrail("hardening", transport=captured.transport)
        before = len(captured.transport.emitted)
        with pytest.raises(AuditValidationError) as caught:
            getattr(trail, method)(**{**GOOD[method], field: value})
        error = caught.value
        assert isinstance(error, AuditError)
        assert error.field == field or error.field.startswith(field + "[")
        assert error.where == method and method in str(error) and field in str(error)
        assert error.rule and error.rule in str(error)
        assert len(captured.transport.emitted) == before
        getattr(trail, method)(**GOOD[method])
        trail.close()
    assert [e["seq"] for e in captured.events] == [0, 1, 2]


@pytest.mark.parametrize("config", ["acks=all", ["acks", "all"], {"acks": object()}, {"": "x"}, {1: "x"}])
def test_bad_producer_config_is_a_configuration_error(tmp_path: Path, config: Any) -> None:
    """A producer_config that is not a dict of scalar settings is refused before anything is sent."""
    with pytest.raises(AuditConfigError, match="producer_config"):
        AuditTrail("x", log_dir=tmp_path, bootstrap_servers="127.0.0.1:1", producer_config=config)


def test_a_regular_file_as_log_dir_is_a_clear_error(tmp_path: Path) -> None:
    """log_dir naming a file: AuditConfigError for a trail, AuditValidationError for a reader."""
    file = tmp_path / "notes.txt"
    file.write_text("mine")
    with pytest.raises(AuditConfigError, match="not a directory"):
        AuditTrail("x", log_dir=file)
    with pytest.raises(AuditValidationError, match="get_audit_logs: invalid 'log_dir'"):
        get_audit_logs(log_dir=file)
    assert file.read_text() == "mine"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"event_type": 123}, "event_type"), ({"event_type": [1]}, "event_type"), ({"event_type": b"x"}, "event_type"),
     ({"limit": 2**70}, "limit"), ({"limit": -1}, "limit"), ({"limit": 1.5}, "limit"), ({"limit": True}, "limit"),
     ({"offset": 2**64}, "offset"), ({"offset": "1"}, "offset"), ({"start_time": "99999-01-01"}, "start_time"),
     ({"start_time": "0001-01-01T00:00:00+05:00"}, "start_time"), ({"end_time": "2026-13-01"}, "end_time"),
     ({"start_time": "2026-02-01", "end_time": "2026-01-01"}, "start_time"), ({"user": 5}, "user"),
     ({"operation_id": ["a"]}, "operation_id"), ({"as_of": -3}, "as_of"), ({"as_of": 1.5}, "as_of"),
     ({"as_of": True}, "as_of"), ({"output": "xml"}, "output"), ({"log_dir": 5}, "log_dir")],
)
def test_get_audit_logs_names_the_call_the_filter_and_the_rule(embedded: Harness, kwargs: dict[str, Any],
                                                              field: str) -> None:
    """Never a driver's exception: each bad filter is an AuditValidationError from get_audit_logs."""
    AuditTrail("x", **embedded.options()).close()
    arguments = {"log_dir": embedded.log_dir, **kwargs}
    with pytest.raises(AuditValidationError) as caught:
        get_audit_logs(**arguments)
    assert caught.value.field == field and caught.value.where == "get_audit_logs"


def _at_the_limits() -> dict[str, Any]:
    return {
        "num_records": MAX_LONG,
        "columns_accessed": [f"c{i}" for i in range(MAX_LIST_ITEMS)],
        "details": {"deep": _deep(MAX_DEPTH - 1), "big": 2**200, "text": "Zoë 🧪 \u0301 \u202e", "float": 1e308},
        "level": MAX_LEVEL,
    }


def test_values_at_the_limits_read_back_exactly(harness: Harness) -> None:
    """The largest count, level, list and nesting, and non-BMP text: stored, and read back as given."""
    limits = _at_the_limits()
    big_text = "é" * ((MAX_EVENT_BYTES - 50_000) // 2)  # two bytes each in UTF-8: near the event limit
    with AuditTrail("limits", **harness.options()) as trail:
        trail.log_data_access("d", limits["columns_accessed"], limits["num_records"], "p", level=limits["level"])
        trail.log_event("custom.limits", limits["details"])
        trail.log_model_inference("m", big_text, {"nested": [1, [2, [3]]]}, 1.0)
    harness.sync()
    logs = get_audit_logs(operation_id=trail.operation_id, log_dir=harness.log_dir)
    access, custom, inference = logs[1], logs[2], logs[3]
    assert access["num_records"] == MAX_LONG and access["level"] == MAX_LEVEL
    assert access["columns_accessed"] == limits["columns_accessed"]
    assert custom["details"] == limits["details"]
    assert inference["input_data"] == big_text and inference["output"] == {"nested": [1, [2, [3]]]}


def test_an_event_over_the_size_limit_is_refused_the_same_in_both_transports(harness: Harness) -> None:
    """17 MiB (and one byte over the limit) is an error at the call, never acknowledged and then lost."""
    with AuditTrail("too-big", **harness.options()) as trail:
        for size in (17 << 20, MAX_EVENT_BYTES + 1):
            with pytest.raises(AuditValidationError) as caught:
                trail.log_model_inference("m", "x" * size, 1)
            assert caught.value.field == "input_data" and "over the limit" in caught.value.rule
        with pytest.raises(AuditValidationError, match="details"):
            trail.log_event("custom.big", {"blob": "y" * MAX_EVENT_BYTES})
        trail.log_model_inference("m", "small", 1)
    report = trail.close()
    assert report.ok and report.delivered == 3
    harness.sync()
    logs = get_audit_logs(operation_id=trail.operation_id, log_dir=harness.log_dir)
    assert [log["seq"] for log in logs] == [0, 1, 2] and logs[1]["input_data"] == "small"


def test_a_context_too_large_for_any_event_is_refused_by_the_constructor(tmp_path: Path) -> None:
    """The trail's context is part of every event: too large, the trail is not opened."""
    with pytest.raises(AuditValidationError) as caught:
        AuditTrail("x", log_dir=tmp_path, context={"blob": "z" * MAX_EVENT_BYTES})
    assert caught.value.field == "context" and caught.value.where == "AuditTrail"
    assert get_audit_logs(log_dir=tmp_path) == []


class Awkward:
    """A value whose size and shape cannot be read."""

    def __len__(self) -> int:
        raise RuntimeError("no len")

    @property
    def shape(self) -> tuple[int, ...]:
        raise RuntimeError("no shape")


def test_audit_function_calls_the_function_when_describing_an_argument_fails(tmp_path: Path) -> None:
    """len() and .shape raising, a recorded value that is no JSON: the function runs and returns as usual."""
    calls = []

    @audit_function(log_dir=tmp_path, record_values=["tag", "return"])
    def score(data: Any, tag: Any) -> Any:
        calls.append(data)
        return Awkward()

    result = score(Awkward(), tag=object())
    assert len(calls) == 1 and isinstance(result, Awkward)
    logs = get_audit_logs(log_dir=tmp_path)
    call = next(log for log in logs if log["event_type"] == "function_call")
    returned = next(log for log in logs if log["event_type"] == "function_return")
    arguments = json.loads(call["arguments"]) if isinstance(call["arguments"], str) else call["arguments"]
    assert "undescribed" in arguments["data"] and "RuntimeError" in arguments["data"]["undescribed"]
    assert "unrecorded" in arguments["tag"] and "JSON" in arguments["tag"]["unrecorded"]
    value = returned["return_value"]
    value = json.loads(value) if isinstance(value, str) else value
    assert "undescribed" in value and logs[-1]["status"] == "completed"


# -- no write outside log_dir --------------------------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside the log directory that a planted link points to; must stay empty."""
    target = tmp_path / "elsewhere"
    target.mkdir()
    return target


def _assert_untouched(target: Path) -> None:
    assert list(target.rglob("*")) == [], f"written through a link: {sorted(target.rglob('*'))}"


def test_a_link_planted_as_the_log_folder_is_refused(tmp_path: Path, outside: Path) -> None:
    """log_dir/log -> elsewhere: AuditTrail refuses to write through it."""
    log_dir = tmp_path / "audit"
    log_dir.mkdir()
    (log_dir / "log").symlink_to(outside)
    with pytest.raises(AuditConfigError, match="symbolic link"):
        AuditTrail("x", log_dir=log_dir)
    _assert_untouched(outside)


def test_a_link_planted_as_the_lake_is_refused(tmp_path: Path, outside: Path) -> None:
    """log_dir/lake -> elsewhere: the materializer refuses to write the lake through it."""
    log_dir = tmp_path / "audit"
    with AuditTrail("x", log_dir=log_dir) as trail:
        trail.log_model_inference("m", "i", 1)
    (log_dir / "lake").symlink_to(outside)
    with pytest.raises(AuditError, match="symbolic link"):
        materialize(log_dir, once=True)
    _assert_untouched(outside)


def test_a_link_planted_as_a_partition_of_the_lake_is_refused(tmp_path: Path, outside: Path) -> None:
    """log_dir/lake/events/event_date=... -> elsewhere: refused before the next commit."""
    log_dir = tmp_path / "audit"
    with AuditTrail("x", log_dir=log_dir) as trail:
        trail.log_model_inference("m", "i", 1)
    materialize(log_dir, once=True)
    (log_dir / "lake" / "events" / "event_date=2999-01-01").symlink_to(outside)
    with AuditTrail("y", log_dir=log_dir) as trail:
        trail.log_model_inference("m", "i", 1)
    with pytest.raises(AuditError, match="symbolic link"):
        materialize(log_dir, once=True)
    _assert_untouched(outside)


@pytest.mark.parametrize("planted", ["dlq", "dlq/dead-letters.jsonl"])
def test_a_link_planted_for_dead_letters_is_refused(tmp_path: Path, outside: Path, planted: str) -> None:
    """log_dir/dlq or its file -> elsewhere: a dead letter is not written through it."""
    from secureml.stream.sources import EmbeddedSource, Item

    log_dir = tmp_path / "audit"
    log_dir.mkdir()
    if planted == "dlq":
        (log_dir / "dlq").symlink_to(outside)
    else:
        (log_dir / "dlq").mkdir()
        (log_dir / planted).symlink_to(outside / "stolen.jsonl")
    source = EmbeddedSource(log_dir)
    source.dead_letter(Item("log/x.seg", 0, 10, None, b"garbage"), "not an event")
    with pytest.raises(AuditConfigError, match="symbolic link"):
        source.flush_dead_letters()
    _assert_untouched(outside)


def test_lake_metadata_naming_a_file_outside_the_lake_is_refused(tmp_path: Path) -> None:
    """An add action with an absolute path (or ..): readers refuse it instead of opening that file."""
    log_dir = tmp_path / "audit"
    with AuditTrail("x", log_dir=log_dir) as trail:
        trail.log_model_inference("m", "i", 1)
    materialize(log_dir, once=True)
    secret = tmp_path / "secret.parquet"
    secret.write_bytes(b"PAR1 not yours")
    for i, bad in enumerate((str(secret), f"file://{secret}", "../../../secret.parquet")):
        copy = tmp_path / f"forged-{i}"
        shutil.copytree(log_dir, copy)
        log = copy / "lake" / "events" / "_delta_log"
        latest = max(int(p.stem) for p in log.glob("*.json"))
        add = {"add": {"path": bad, "partitionValues": {"event_date": "2026-01-01"}, "size": 14,
                       "modificationTime": 0, "dataChange": True, "stats": json.dumps({"numRecords": 1})}}
        (log / f"{latest + 1:020d}.json").write_text(
            json.dumps({"commitInfo": {"operation": "WRITE"}}) + "\n" + json.dumps(add) + "\n")
        with pytest.raises(AuditError, match="outside itself"):
            get_audit_logs(log_dir=copy)
    assert len(get_audit_logs(log_dir=log_dir)) == 3  # the original lake reads as before


# -- the command line ----------------------------------------------------------------------------


def _one_line_error(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert all(word in done.stderr for word in words), done.stderr


@pytest.mark.parametrize("command", ["query", "materialize --once"])
def test_a_missing_log_dir_is_an_error_not_an_empty_answer(tmp_path: Path, command: str) -> None:
    """A typo in --log-dir: exit 2 with one line naming the folder, and no folder created."""
    missing = tmp_path / "typo"
    done = run_cli(*command.split(), "--log-dir", str(missing))
    _one_line_error(done, str(missing), "does not exist")
    assert not missing.exists()


def test_report_format_and_output_suffix_must_agree(tmp_path: Path) -> None:
    """--format html --output x.pdf: refused, nothing written (it used to write a PDF without a word)."""
    with AuditTrail("x", log_dir=tmp_path) as trail:
        trail.log_model_inference("m", "i", 1)
    out = tmp_path / "x.pdf"
    done = run_cli("report", "--log-dir", str(tmp_path), "--format", "html", "--output", str(out))
    assert done.returncode == 2 and "x.html" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not out.exists()


def test_query_output_neutralises_terminal_escapes(tmp_path: Path) -> None:
    """An operation name or user holding ESC sequences is printed as escapes, in the table and in CSV."""
    evil = "train\x1b[2J\x1b]0;pwned\x07\u202emodel"
    with AuditTrail(evil, log_dir=tmp_path, user="eve\x1b[31m") as trail:
        trail.log_model_inference("m", "i", 1)
    for form in ("table", "csv"):
        done = run_cli("query", "--log-dir", str(tmp_path), "--format", form)
        assert done.returncode == 0, done.stderr
        assert "\x1b" not in done.stdout and "\x07" not in done.stdout and "\u202e" not in done.stdout
        assert "\\x1b[2J" in done.stdout and "\\u202e" in done.stdout
    stored = get_audit_logs(log_dir=tmp_path)
    assert stored[0]["operation_name"] == evil  # the event itself keeps what was logged


def test_query_into_a_closed_pipe_stops_quietly(tmp_path: Path) -> None:
    """``query | head -1``: no BrokenPipeError traceback, the status of a command the pipe closed (141)."""
    with AuditTrail("many", log_dir=tmp_path) as trail:
        for i in range(3000):
            trail.log_model_inference("m", f"i{i}", i)
    process = subprocess.Popen([sys.executable, "-m", "secureml.audit.cli", "query", "--log-dir", str(tmp_path),
                                "--format", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.readline()
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(120) == 141 and "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr


# -- honest integrity claims ---------------------------------------------------------------------


def test_without_a_signing_key_nothing_claims_to_be_signed(kafka: Harness, tmp_path: Path) -> None:
    """Kafka mode, no key: materialize says NOT SIGNED, verify exits 1 unless --allow-unsigned, the demo's words."""
    env = {"SECUREML_AUDIT_SIGNING_KEY": str(tmp_path / "no-such-key.pem")}
    with AuditTrail("unsigned", **kafka.options()) as trail:
        trail.log_model_inference("m", "i", 1)
    done = run_cli("materialize", "--once", "--log-dir", str(kafka.log_dir), "--bootstrap-servers", kafka.bootstrap,
                   "--topic", kafka.topic, env=env)
    assert done.returncode == 0 and "NOT SIGNED" in done.stderr, done.stderr
    verified = run_cli("verify", "--log-dir", str(kafka.log_dir), env=env)
    assert verified.returncode == 1 and verified.stdout.startswith("INTACT, NOT SIGNED:"), verified.stdout
    assert "--allow-unsigned" in verified.stderr and "signed checkpoints" not in verified.stdout.splitlines()[0]
    allowed = run_cli("verify", "--log-dir", str(kafka.log_dir), "--allow-unsigned", env=env)
    assert allowed.returncode == 0 and allowed.stdout.startswith("INTACT, NOT SIGNED:")
    result = verify(kafka.log_dir)
    assert result.ok and not result.signed and result.verdict == "intact, not signed"
    assert result.summary()["status"] == "intact, not signed"


def _embedded_lake(tmp_path: Path) -> tuple[Path, Path]:
    log_dir = tmp_path / "audit_logs"
    with AuditTrail("segments", log_dir=log_dir) as trail:
        for i in range(200):
            trail.log_model_inference("m", f"i{i}", i)
    materialize(log_dir, once=True)
    (segment,) = sorted((log_dir / "log").glob("*.seg"))
    return log_dir, segment


def test_verify_reports_a_truncated_or_deleted_embedded_segment(tmp_path: Path) -> None:
    """The lake recorded what it read from each segment: a segment shorter than that, or gone, is tampering."""
    log_dir, segment = _embedded_lake(tmp_path)
    assert verify(log_dir).ok
    data = segment.read_bytes()
    segment.write_bytes(data[: len(data) // 2])
    truncated = verify(log_dir)
    assert not truncated.ok and [f.kind for f in truncated.errors] == ["log_truncated"]
    assert segment.name in truncated.errors[0].message
    segment.unlink()
    deleted = verify(log_dir)
    assert not deleted.ok and [f.kind for f in deleted.errors] == ["log_deleted"]


def test_a_copy_of_the_lake_without_its_log_is_only_said_to_be_so(tmp_path: Path) -> None:
    """An auditor's copy of lake/ alone: verify passes and says the log was not compared."""
    log_dir, _segment = _embedded_lake(tmp_path)
    copy = tmp_path / "auditor"
    shutil.copytree(log_dir / "lake", copy / "lake")
    result = verify(copy)
    assert result.ok and "log_absent" in [f.kind for f in result.warnings]


@pytest.mark.parametrize("how", ["dotdot", "symlink"])
def test_the_signing_key_may_not_hide_inside_log_dir_behind_dots_or_links(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch,
                                                                          how: str) -> None:
    """`log_dir/../log_dir/key.pem` and a link into log_dir are inside log_dir: refused, nothing signed with it."""
    log_dir = tmp_path / "audit_logs"
    with AuditTrail("x", log_dir=log_dir) as trail:
        trail.log_model_inference("m", "i", 1)
    if how == "dotdot":
        key = log_dir / ".." / "audit_logs" / "keys" / "signing_key.pem"
    else:
        (tmp_path / "keys-link").symlink_to(log_dir, target_is_directory=True)
        key = tmp_path / "keys-link" / "signing_key.pem"
    monkeypatch.setenv("SECUREML_AUDIT_SIGNING_KEY", str(key))
    with pytest.raises(AuditError, match="inside the audit log directory"):
        materialize(log_dir, once=True)
    assert not (log_dir / "keys").exists() and not (log_dir / "signing_key.pem").exists()


def test_a_lost_data_file_costs_its_rows_only_and_is_named(tmp_path: Path) -> None:
    """Delete one of the version's files: readers serve the others with a warning naming it; verify locates it."""
    import pyarrow.parquet as pq

    from secureml.audit.exceptions import LakeDamageWarning

    log_dir = tmp_path / "audit_logs"
    trails = []
    for name in ("first", "second"):
        with AuditTrail(name, log_dir=log_dir) as trail:
            trail.log_model_inference("m", "i", 1)
        trails.append(trail)
        materialize(log_dir, once=True)
    files = sorted((log_dir / "lake" / "events").rglob("*.parquet"))
    assert len(files) == 2  # one commit each, not compacted yet (fewer than 16 files today)
    first_file = next(f for f in files
                      if trails[0].operation_id in pq.read_table(f, columns=["operation_id"]).column(0).to_pylist())
    first_file.unlink()
    with pytest.warns(LakeDamageWarning, match=first_file.name):
        logs = get_audit_logs(log_dir=log_dir)
    assert {log["operation_id"] for log in logs} == {trails[1].operation_id}
    result = verify(log_dir)
    assert not result.ok and any(f.kind == "file_missing" and first_file.name in " ".join(f.files) + f.message
                                 for f in result.errors)


def test_audit_function_runs_the_function_whatever_size_its_recorded_values_have(tmp_path: Path) -> None:
    """Recorded arguments and return values too large for one event are described, not recorded; the call runs."""

    @audit_function(log_dir=tmp_path, record_values=["a", "b", "c", "d", "e", "return"])
    def concat(a: str, b: str, c: str, d: str, e: str) -> str:
        return a + b + c + d + e

    result = concat(*["z" * 200_000] * 5)
    assert len(result) == 1_000_000
    logs = get_audit_logs(log_dir=tmp_path)
    call = next(log for log in logs if log["event_type"] == "function_call")
    returned = next(log for log in logs if log["event_type"] == "function_return")
    assert all("unrecorded" in call["arguments"][name] for name in "abcde")
    assert "too large to record" in returned["return_value"]["unrecorded"]
    assert logs[-1]["status"] == "completed"
