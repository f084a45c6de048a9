"""The native result dicts (issue 11 item 3): `native/src/rows.rs` gives exactly the dicts of the pure-Python
conversion, key order included, on real lakes (every event type, nulls, non-ASCII, erased subjects, large
results) and on tricky tables; each row's containers are its own; what it does not handle falls back.

CI installs the accelerator (`pip install ./native`): these tests fail, never skip, when it is missing."""

from __future__ import annotations

import gc
import json
import math
import os
import pickle
import random
import struct
import subprocess
import sys
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import secureml_audit_native

from secureml.audit import AuditTrail, audit_function, erase_subject, get_audit_logs
from secureml.audit.accelerator import NATIVE_ENV
from secureml.audit.privacy.reveal import ERASED, RevealedEvent
from secureml.lake.rows import lake_schema
from secureml.materializer import materialize_embedded
from secureml.query import logs as logs_module
from secureml.query.logs import query_events
from secureml.query.privacy import release_unused

NON_ASCII = ["é ß 日本語", "emoji 😀👍🏽", "", "line\nbreak\ttab", 'quote " and \\ backslash', "\u2028\x7f"]


def both_paths(monkeypatch: pytest.MonkeyPatch, call: Any) -> tuple[Any, Any]:
    """``call()`` with the native conversion, then with the pure-Python one."""
    assert logs_module._native_log_dicts is secureml_audit_native.log_dicts
    native = call()
    with monkeypatch.context() as patch:
        patch.setattr(logs_module, "_native_log_dicts", None)
        python = call()
    return native, python


def exact(value: Any) -> Any:
    """A value compared exactly: types kept (a revealed event's class is ``RevealedEvent``, whichever of its
    subclasses keeps its sealed forms), keys in order at every depth, floats by their bits (-0.0 is not 0.0, NaN
    is NaN)."""
    if isinstance(value, dict):
        return (RevealedEvent if isinstance(value, RevealedEvent) else type(value),
                [(k, exact(v)) for k, v in value.items()])
    if isinstance(value, list):
        return (list, [exact(v) for v in value])
    if isinstance(value, float):
        return (float, struct.pack("<d", value))
    return (type(value), value)


def assert_same_dicts(native: list[dict[str, Any]], python: list[dict[str, Any]]) -> None:
    """The same dicts (classes, keys in order, values exactly), and for revealed events the same sealed values."""
    assert len(native) == len(python)
    for ours, theirs in zip(native, python):
        assert exact(ours) == exact(theirs)
        if isinstance(ours, RevealedEvent):
            assert exact(ours.sealed) == exact(theirs.sealed)


def log_every_type(log_dir: Path, rounds: int, rng: random.Random) -> None:
    """Trails logging every event type with nulls, non-ASCII text, nested and flat JSON, subjects."""

    @audit_function("scored", log_dir=log_dir, record_values=("x",))
    def score(x: Any) -> dict[str, Any]:
        return {"score": x, "tags": ["a", NON_ASCII[0]]}

    for n in range(rounds):
        text = rng.choice(NON_ASCII)  # free text may be empty; names and list items may not
        word = text or "x"
        subject = f"subject-{n % 3}"
        with AuditTrail(f"every type {text}", log_dir=log_dir, user=rng.choice([None, "analyst", word]),
                        context={"team": text, "run": n, "nested": {"deep": [1, {"x": None}]}} if n % 2 else None,
                        regulations=["GDPR", word] if n % 3 else None) as trail:
            trail.log_data_access("customers", ["name", word], rng.choice([0, 2**62, 5]), rng.choice([None, word]))
            trail.log_data_transformation("clean", f"in {text}", "out",
                                          {"drop": [1, 2], "how": text} if n % 2 else None)
            trail.log_model_training("xgb", "customers", {"depth": 6, "eta": 0.1},
                                     {"auc": rng.random(), "loss": -0.0} if n % 2 else None,
                                     {"epsilon": 1.5} if n % 3 else None)
            output = rng.choice([{"score": 0.7}, "low", 3, None, [1, "two"], {"a": {"b": [text]}}])
            trail.log_model_inference("credit", f"{subject} features {text}", output,
                                      rng.choice([None, 0.0, 0.91, 1e-300]), subject=subject)
            trail.log_compliance_check("consent", "GDPR", bool(n % 2), {"checked": text} if n % 2 else None)
            trail.log_user_request("access", subject, {"email": f"{subject}@example.com", "note": text}, "pending")
            trail.log_error("ValueError", f"bad {text}", {"code": n} if n % 2 else None)
            trail.log_event("custom_thing", {"free": text, "n": n})
        score(n if n % 2 else text)


def every_type_lake(factory: pytest.TempPathFactory, name: str, seed: int) -> tuple[Path, Path]:
    """A materialised lake of every event type logged with the privacy policy and its key store, with one subject
    erased and an embedded tail not materialised yet (read beside the lake)."""
    log_dir = factory.mktemp(name) / "logs"
    keys = factory.mktemp(f"{name}-keys")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SECUREML_AUDIT_KEYSTORE_DIR", str(keys))
        rng = random.Random(seed)
        log_every_type(log_dir, 30, rng)
        materialize_embedded(log_dir)
        erase_subject("subject-1", log_dir, reason="asked")
        log_every_type(log_dir, 3, rng)
    return log_dir, keys


def read_with_keys(lake_and_keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    """The lake, its key store set for the test."""
    log_dir, keys = lake_and_keys
    monkeypatch.setenv("SECUREML_AUDIT_KEYSTORE_DIR", str(keys))
    return log_dir


@pytest.fixture(scope="module")
def lake_and_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return every_type_lake(tmp_path_factory, "rows", 11)


@pytest.fixture
def lake(lake_and_keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    return read_with_keys(lake_and_keys, monkeypatch)


def test_every_event_type_of_a_real_lake_reads_alike(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every event of the lake and its tail: the same dicts (revealed, erased, key order) from both paths."""
    native, python = both_paths(monkeypatch, lambda: get_audit_logs(log_dir=lake))
    assert_same_dicts(native, python)
    types = {log["event_type"] for log in native}
    assert types >= {"audit_started", "data_access", "data_transformation", "model_training", "model_inference",
                     "compliance_check", "user_request", "error", "custom_thing", "function_call", "function_return",
                     "audit_closed", "subject_erased"}
    assert any(log.get("input_data") == ERASED for log in native)  # subject-1's values after the erasure
    assert any(log.get("user_id") == "subject-2" for log in native)  # a subject revealed
    assert any(isinstance(log, RevealedEvent) for log in native)
    assert any(log["user"] == NON_ASCII[1] for log in native) or any(log["user"] is None for log in native)
    for log in native:
        assert list(log) == list(logs_module._keys(log["event_type"]))


@pytest.mark.parametrize("query", [
    {"event_type": "model_inference"}, {"event_type": ["error", "user_request"]}, {"subject": "subject-2"},
    {"limit": 7, "offset": 3}, {"operation_name": "scored"}, {"user": "analyst"},
])
def test_filtered_and_paged_results_read_alike(lake: Path, query: dict[str, Any], monkeypatch: pytest.MonkeyPatch
                                               ) -> None:
    """Results of one type, of several, of a subject and pages (fewer rows than the Python path's templates)."""
    native, python = both_paths(monkeypatch, lambda: get_audit_logs(log_dir=lake, **query))
    assert native
    assert_same_dicts(native, python)


def test_each_row_owns_its_containers(lake: Path) -> None:
    """No dict or list is shared between two rows (rows are the caller's to change), at any depth."""
    logs = get_audit_logs(log_dir=lake)
    seen: dict[int, Any] = {}

    def walk(value: Any, row: int) -> None:
        if isinstance(value, (dict, list)):
            assert seen.setdefault(id(value), row) == row, value
            for item in value.values() if isinstance(value, dict) else value:
                walk(item, row)

    for row, log in enumerate(logs):
        walk(log, row)
    logs[0]["regulations"].append("changed")
    logs[0]["context"]["changed"] = True
    again = get_audit_logs(log_dir=lake)
    assert "changed" not in again[0]["regulations"] and "changed" not in again[0]["context"]


def test_switched_off_the_pure_python_path_gives_the_same_dicts(lake: Path) -> None:
    """A process with SECUREML_AUDIT_NATIVE=0 (no accelerator at all) reads the same dicts as this one."""
    script = ("import pickle, sys\n"
              "from secureml.query import logs\n"
              "from secureml.audit import get_audit_logs\n"
              "assert logs._native_log_dicts is None\n"
              "sys.stdout.buffer.write(pickle.dumps(get_audit_logs(log_dir=sys.argv[1])))\n")
    done = subprocess.run([sys.executable, "-c", script, str(lake)], env={**os.environ, NATIVE_ENV: "0"},
                          capture_output=True, check=True)
    assert_same_dicts(get_audit_logs(log_dir=lake), pickle.loads(done.stdout))


def table_of(rows: int, rng: random.Random, *, chunk: int = 997) -> pa.Table:
    """Rows of random event types with random values of every column kind, in several chunks."""
    schema = lake_schema()
    types = ["model_inference", "error", "data_access", "compliance_check", "model_training", "audit_started"]
    json_texts = ['{}', '{"a":1}', '{"a":{"b":[1,2]}}', '[1,"x",null]', '[]', '"text"', '3', '-0.0', '1e400',
                  'NaN', '-Infinity', '123456789012345678901234567890', 'null', 'true', '{"k":1,"k":2}',
                  '"\\\\ud800 not an escape"', '"\\ud800"', '{"\\u00e9":"\\ud83d\\ude00"}', '[[[]]]', '{"é": ["日本"]}']
    columns: dict[str, list[Any]] = {}
    for field in schema:
        kind = field.type
        values: list[Any]
        if field.name == "event_type":
            values = [rng.choice(types) for _ in range(rows)]
        elif pa.types.is_timestamp(kind):
            edge = [-62_135_596_800_000_000, 253_402_300_799_999_999, 0, -1, 1_767_225_600_000_000]
            base = rng.choice(edge)
            values = [rng.choice([base, base, rng.randrange(-62_135_596_800_000_000, 253_402_300_799_999_999)] + edge)
                      for _ in range(rows)]
        elif field.name == "details":  # a text per row (a cache of parsed texts gives up on these)
            values = [json.dumps({"n": i, "list": [i, NON_ASCII[i % 6]], "deep": {"x": [{}]}}) for i in range(rows)]
        elif field.name in logs_module.JSON_FIELDS:
            values = [rng.choice(json_texts) for _ in range(rows)]
        elif pa.types.is_large_list(kind):
            values = [rng.choice([[], ["GDPR"], ["GDPR", NON_ASCII[0]], [None, "x"]]) for _ in range(rows)]
        elif pa.types.is_large_string(kind):
            pool = [*NON_ASCII, *(f"id-{i}" for i in range(rng.choice([3, rows])))]
            values = [rng.choice(pool) for _ in range(rows)]
        elif pa.types.is_floating(kind):
            values = [rng.choice([0.0, -0.0, 0.0, math.nan, math.inf, 1e-300, 0.5]) for _ in range(rows)]
        elif pa.types.is_boolean(kind):
            values = [rng.choice([True, False]) for _ in range(rows)]
        else:
            values = [rng.choice([0, 1, 1, -(2**31), 2**31 - 1]) for _ in range(rows)]
        if field.nullable:
            values = [None if rng.random() < 0.2 else v for v in values]
        columns[field.name] = values
    chained = rng.choice([0.0, 0.7, 1.0])  # how often an event's prev_hash is the hash of the row before
    columns["prev_hash"] = [h if rng.random() < chained else p
                            for h, p in zip([None, *columns["hash"][:-1]], columns["prev_hash"])]
    table = pa.table({name: pa.array(values, schema.field(name).type) for name, values in columns.items()})
    return pa.Table.from_batches(table.to_batches(max_chunksize=chunk))


def test_an_events_prev_hash_shares_the_hash_of_the_row_before(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where an event's prev_hash is the hash of the row before it (a chain, in storage order), its dict holds that
    row's hash str itself; values stay exactly the Python path's, in order and shuffled, chained or not."""
    table = query_events(log_dir=lake, reveal=False)
    native = logs_module._to_logs(table)
    shared = sum(log["prev_hash"] is before["hash"] for before, log in zip(native, native[1:]))
    assert shared > len(native) // 2
    rng = random.Random(9)
    for chunk in (1, 7, 300):
        mixed = table_of(3_000, rng, chunk=chunk)
        order = np.array(rng.sample(range(3_000), 3_000)) if chunk == 7 else None
        native, python = both_paths(monkeypatch, lambda: logs_module._to_logs(mixed, order))  # noqa: B023
        assert_same_dicts(native, python)


@pytest.mark.parametrize("rows", [1, 63, 64, 3_000, 25_000])
def test_tricky_tables_convert_alike(rows: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Random tables: every column kind, nulls, -0.0 beside 0.0, NaN, huge and lone-surrogate JSON, the ends of
    years 1 and 9999, several chunks and event types, in their order and in a shuffled one."""
    rng = random.Random(rows)
    table = table_of(rows, rng)
    shuffled = list(range(rows))
    rng.shuffle(shuffled)
    for order in (None, np.array(shuffled, np.int64)):
        native, python = both_paths(monkeypatch, lambda: logs_module._to_logs(table, order))  # noqa: B023
        assert_same_dicts(native, python)
    if rows >= 3_000:  # the table holds what the test is about
        assert any(v == "\ud800" for log in native for v in log.values())  # a lone surrogate, from its escape
        assert {log["event_type"] for log in native} == {"model_inference", "error", "data_access", "compliance_check",
                                                        "model_training", "audit_started"}


def in_runs(table: pa.Table, rng: random.Random, longest: int) -> pa.Table:
    """``table`` with every column's values (the event type's too) repeated in runs of 1 to ``longest`` rows, each
    column's runs its own: rows that repeat the row before, as in a lake sorted by operation and time."""
    rows = table.num_rows
    columns = {}
    for name in table.column_names:
        values = table.column(name).to_pylist()
        repeated: list[Any] = []
        while len(repeated) < rows:
            repeated += [values[len(repeated)]] * rng.randint(1, longest)
        columns[name] = pa.array(repeated[:rows], table.schema.field(name).type)
    return pa.table(columns)


@pytest.mark.parametrize("longest", [3, 200, 5_000])
def test_runs_of_repeated_values_convert_alike(longest: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Values that repeat the row before's, in runs short and long (blocks of 1,024 rows where a column only repeats
    or is only null, runs across blocks and chunks, a type's rows apart from its last row by another type's run), and
    a column whose values vary row to row for thousands of rows, then repeat: the same dicts as the Python path."""
    rng = random.Random(longest)
    table = in_runs(table_of(12_000, rng), rng, longest)
    varying = [f"id-{i}" if i < 7_000 else "the same" for i in range(12_000)]
    table = table.set_column(table.schema.get_field_index("event_id"), "event_id", pa.array(varying, pa.large_string()))
    for chunk in (997, 4_096):
        chunked = pa.Table.from_batches(table.to_batches(max_chunksize=chunk))
        native, python = both_paths(monkeypatch, lambda: logs_module._to_logs(chunked))  # noqa: B023
        assert_same_dicts(native, python)
    assert [log["event_id"] for log in native] == varying


def test_a_value_it_does_not_handle_falls_back_to_the_python_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A time past year 9999 (Arrow's text and Python's datetime part there) or a column type the lake does not
    use: log_dicts declines and the Python path decides."""
    table = table_of(200, random.Random(3))
    late = table.set_column(table.schema.get_field_index("timestamp"), "timestamp",
                            pa.array([253_402_300_800_000_000] * 200, pa.timestamp("us", "UTC")))
    small = table.set_column(table.schema.get_field_index("level"), "level", pa.array([20] * 200, pa.int16()))
    for declined in (late, small):
        assert secureml_audit_native.log_dicts(declined.to_batches(), logs_module._template,
                                               logs_module.TIMESTAMP_FIELDS, tuple(logs_module.JSON_FIELDS),
                                               json.loads) is None
    native, python = both_paths(monkeypatch, lambda: logs_module._to_logs(small))
    assert_same_dicts(native, python)


def test_bad_json_raises_as_in_the_python_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A JSON column holding what is not JSON raises json.loads's error in both paths."""
    table = table_of(100, random.Random(5))
    index = table.schema.get_field_index("context")
    broken = table.set_column(index, "context", pa.array(["{not json"] * 100, pa.large_string()))
    for native in (secureml_audit_native.log_dicts, None):
        monkeypatch.setattr(logs_module, "_native_log_dicts", native)
        with pytest.raises(json.JSONDecodeError):
            logs_module._to_logs(broken)


@pytest.fixture(scope="module")
def large_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A materialised lake of 30,002 events (one operation of inferences)."""
    log_dir = tmp_path_factory.mktemp("large") / "logs"
    with AuditTrail("large", log_dir=log_dir, user="analyst", context={"batch": 1}) as trail:
        for n in range(30_000):
            trail.log_model_inference(f"model_{n % 7}", f"features {n % 500} {NON_ASCII[n % 6]}",
                                      {"score": n % 10} if n % 3 else "low", (n % 100) / 100, subject=f"s{n % 50}")
    materialize_embedded(log_dir)
    return log_dir


def test_a_large_result_of_a_real_lake_reads_alike(large_lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tens of thousands of rows: the Python path's shared values and templates against the native caches."""
    native, python = both_paths(monkeypatch, lambda: get_audit_logs(log_dir=large_lake))
    assert len(native) == 30_002
    assert_same_dicts(native, python)


def test_large_results_leave_the_collector_working(large_lake: Path) -> None:
    """A large result moves its objects past the young collections (gc.freeze + unfreeze) without unfreezing what
    the process froze itself, and a cycle made later through its dicts is still collected."""

    class Box:
        log: dict[str, Any]

    assert gc.isenabled()
    kept = [Box()]
    gc.collect()  # earlier queries' classes: a query would free what is left of them among the frozen objects
    release_unused()
    gc.freeze()
    frozen = gc.get_freeze_count()
    try:
        logs = get_audit_logs(log_dir=large_lake)
        assert len(logs) == 30_002 and gc.isenabled()
        assert gc.get_freeze_count() == frozen  # the process's own frozen objects stay frozen
    finally:
        gc.unfreeze()
    logs = get_audit_logs(log_dir=large_lake)
    assert gc.get_freeze_count() == 0
    box = Box()
    box.log = logs[0]
    logs[0]["box"] = box
    collected = weakref.ref(box)
    del logs, box
    gc.collect()
    assert collected() is None and kept


def test_row_dicts_change_like_any_dict(lake: Path) -> None:
    """Rows share their keys' table with the template (CPython's split dicts): adding, removing and setting keys,
    copying and serialising give what a plain dict of the same items gives, and leave other rows alone."""
    logs = get_audit_logs(log_dir=lake, event_type="model_inference")
    first, second = logs[0], logs[1]
    plain = dict(list(first.items()))
    for row in (first, plain):
        row["added"] = "é"
        del row["seq"]
        row["timestamp"] = None
        row.pop("hash")
        row.setdefault("model_id", "ignored")
    assert list(first.items()) == list(plain.items())
    assert json.dumps(first, default=str) == json.dumps(plain, default=str)
    assert pickle.loads(pickle.dumps(first)) == plain and first.copy() == plain
    assert "added" not in second and "seq" in second and second["hash"]
    assert list(second) == list(logs_module._keys("model_inference"))
