"""A whole result as dicts, read in parts (issue 11 item 3): `get_audit_logs` reads only the columns the dicts hold,
makes the dicts of each part of DuckDB's result as the next is read (`_streamed_logs`), parses each JSON text once
across the parts (`JsonCache`), and the accelerator hands CPython arenas faulted in ahead (`native/src/arenas.rs`).
The dicts, their order, their classes and their sealed forms are those of the whole table converted at once.

CI installs the accelerator (`pip install ./native`): these tests fail, never skip, when it is missing."""

from __future__ import annotations

import ctypes
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import secureml_audit_native
from test_native_rows import assert_same_dicts, every_type_lake, read_with_keys, table_of

from secureml.audit import get_audit_logs
from secureml.audit.privacy.reveal import RevealedEvent
from secureml.lake.rows import lake_schema
from secureml.query import logs as logs_module
from secureml.query.logs import query_events, time_order
from secureml.query.privacy import revealer_for


@pytest.fixture(scope="module")
def lake_and_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return every_type_lake(tmp_path_factory, "streamed", 23)


@pytest.fixture
def lake(lake_and_keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    return read_with_keys(lake_and_keys, monkeypatch)


def whole(log_dir: Path, **query: Any) -> list[dict[str, Any]]:
    """The dicts of the whole table converted at once, every column read (as before results were read in parts)."""
    table = query_events(log_dir=log_dir, reveal=False, in_order=False, **query)
    return logs_module._to_logs(table, time_order(table), revealer_for(log_dir))


def counted_native(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The rows of each call of the accelerator's conversion, counted."""
    calls: list[int] = []
    native = logs_module._native_log_dicts
    assert native is secureml_audit_native.log_dicts

    def counting(batches: list[pa.RecordBatch], *args: Any) -> Any:
        calls.append(sum(batch.num_rows for batch in batches))
        return native(batches, *args)

    monkeypatch.setattr(logs_module, "_native_log_dicts", counting)
    return calls


@pytest.mark.parametrize("part_rows", [1, 7, 64, 1_000_000])
def test_a_result_read_in_parts_gives_the_dicts_of_the_whole(lake: Path, part_rows: int,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Parts of 1, 7 or 64 rows or one part: the same dicts in the same order, the same classes and sealed forms
    (revealed users and inputs, erased values, a subject request's e-mail revealed in its JSON), as the whole table
    with every column converted at once."""
    expected = whole(lake)
    monkeypatch.setattr(logs_module, "STREAM_ROWS", part_rows)
    calls = counted_native(monkeypatch)
    logs = get_audit_logs(log_dir=lake)
    assert_same_dicts(logs, expected)
    assert sum(calls) == len(logs)
    assert all(rows >= part_rows for rows in calls[:-1])  # parts of at least that many rows, the last of the rest
    if part_rows >= len(logs):
        assert len(calls) == 1
    else:
        assert len(calls) >= len(logs) // (2 * part_rows)
    assert any(isinstance(log, RevealedEvent) for log in logs)
    assert any(log["event_type"] == "user_request" and "@example.com" in json.dumps(log["details"]) for log in logs)
    timestamps = [log["timestamp"] for log in logs]
    assert timestamps == sorted(timestamps)


def test_filtered_results_in_parts_read_alike(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Filters and pages, read in parts of 5 rows: the dicts of the same query converted at once."""
    monkeypatch.setattr(logs_module, "STREAM_ROWS", 5)
    for query in ({"event_type": "model_inference"}, {"subject": "subject-2"}, {"operation_name": "scored"},
                  {"limit": 9, "offset": 4}, {"user": "analyst"}):
        assert_same_dicts(get_audit_logs(log_dir=lake, **query), whole(lake, **query))


def test_only_the_columns_the_dicts_hold_are_read(lake: Path) -> None:
    """A result of one event type reads its keys (and the time order's columns), not the other types' payload columns
    nor the lake's own bookkeeping; a result of every type reads every type's keys."""
    def columns(**query: Any) -> list[str]:
        with logs_module._selected(None, None, None, None, lake, event_type=query.get("event_type"), user=None,
                                   subject=None, limit=None, offset=0, as_of=None, where="test",
                                   dict_columns=True) as (relation, _, _):
            return relation.columns

    inference = columns(event_type="model_inference")
    assert set(inference) == set(logs_module._keys("model_inference"))
    assert inference == [name for name in lake_schema().names if name in inference]  # the lake's order
    everything = set(columns())
    assert "source" not in everything and "source_offset" not in everything
    assert {"model_id", "dataset_name", "check_type", "request_type", "error_type"} <= everything


def test_a_part_the_accelerator_refuses_sends_the_whole_result_to_the_python_path(
        lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the accelerator leaves the third part to the Python path, the rest is still read, and the whole result
    comes from the Python path: the same dicts; the query's revealed forms made so far are dropped."""
    expected = whole(lake)
    monkeypatch.setattr(logs_module, "STREAM_ROWS", 10)
    native = logs_module._native_log_dicts
    made: list[Any] = []

    def refusing_the_third(batches: list[pa.RecordBatch], *args: Any) -> Any:
        made.append(args[5])
        return None if len(made) == 3 else native(batches, *args)

    monkeypatch.setattr(logs_module, "_native_log_dicts", refusing_the_third)
    logs = get_audit_logs(log_dir=lake)
    assert len(made) == 3  # nothing converted after the refusal
    assert_same_dicts(logs, expected)
    assert not any(type(log).__name__ == "RevealedEvent" and hasattr(type(log), "_rows") for log in logs)
    reveal = next(args for args in made if args is not None)
    assert not reveal[1]._rows.holding()  # the native events' query, released


def test_each_json_text_is_parsed_once_across_the_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """A JSON text repeated far apart in a result read in parts is parsed once for the whole result (the parts share
    a `JsonCache`), not once per part, and each row still gets a container of its own."""
    rng = random.Random(5)
    rows = 6_000
    details = [json.dumps({"checked": rng.randrange(300)}) for _ in range(rows)]
    table = pa.table({"event_type": ["compliance_check"] * rows,
                      "details": details}).cast(pa.schema([("event_type", pa.string()), ("details", pa.string())]))
    parsed: list[str] = []

    def loads(text: str) -> Any:
        parsed.append(text)
        return json.loads(text)

    cache = secureml_audit_native.JsonCache()

    def template(_event_type: str | None) -> dict[str, Any]:
        return {"event_type": None, "details": None}

    logs: list[dict[str, Any]] = []
    for start in range(0, rows, 500):
        part = table.slice(start, 500)
        made = secureml_audit_native.log_dicts(part.to_batches(), template, [], ["details"], loads, None, None, cache)
        assert made is not None
        logs += made
    assert len(parsed) == len(set(details)) <= 300
    assert [log["details"] for log in logs] == [json.loads(text) for text in details]
    assert len({id(log["details"]) for log in logs}) == rows  # every row's dict its own
    logs[0]["details"]["checked"] = -1
    assert all(log["details"]["checked"] >= 0 for log in logs[1:])


class _ArenaAllocator(ctypes.Structure):
    _fields_ = [("ctx", ctypes.c_void_p), ("alloc", ctypes.c_void_p), ("free", ctypes.c_void_p)]


def arena_allocator() -> tuple[int | None, int | None, int | None]:
    """CPython's arena allocator now (context and functions, as addresses)."""
    found = _ArenaAllocator()
    ctypes.pythonapi.PyObject_GetArenaAllocator(ctypes.byref(found))
    return found.ctx, found.alloc, found.free


# A fresh interpreter (whose memory holds no pools freed by earlier tests) making the dicts of 50k rows.
FRESH_PASS = """
import json, sys
import pyarrow as pa
import secureml_audit_native
from secureml.query import logs
rows = 50_000
table = pa.table({name: pa.array(values, pa.string()) for name, values in {
    "event_type": ["model_inference"] * rows, "event_id": [f"op:{n}" for n in range(rows)],
    "hash": [f"{n:064x}" for n in range(rows)], "input_data": [f"features {n}" for n in range(rows)],
}.items()})
def template(event_type):
    return dict.fromkeys(("event_type", "event_id", "hash", "input_data"))
before = secureml_audit_native.arenas_prefaulted()
made = secureml_audit_native.log_dicts(table.to_batches(), template, [], [], json.loads)
assert [d["event_id"] for d in made[:2]] == ["op:0", "op:1"] and len(made) == rows
print(secureml_audit_native.arenas_prefaulted() - before)
"""


def test_arenas_faulted_in_ahead_serve_a_large_pass_and_the_interpreters_allocator_comes_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A pass of 50k rows in a fresh interpreter takes CPython arenas the helper mapped ahead; here, the interpreter's
    own arena allocator is back when a pass ends, also when it fails, and the dicts are those of the Python path."""
    child = subprocess.run([sys.executable, "-c", FRESH_PASS], capture_output=True, text=True, timeout=120, check=True)
    assert int(child.stdout) > 10  # ~55 MB of dicts: arenas of 1 MiB
    before = arena_allocator()
    table = table_of(25_000, random.Random(3))
    order = np.array(random.Random(4).sample(range(25_000), 25_000), np.int64)
    native = logs_module._to_logs(table, order)
    assert arena_allocator() == before
    with monkeypatch.context() as patch:
        patch.setattr(logs_module, "_native_log_dicts", None)
        python = logs_module._to_logs(table, order)
    assert_same_dicts(native, python)

    def failing(_event_type: str | None) -> dict[str, Any]:
        raise RuntimeError("template")

    with pytest.raises(RuntimeError, match="template"):
        secureml_audit_native.log_dicts(table.to_batches(), failing, list(logs_module.TIMESTAMP_FIELDS),
                                        list(logs_module.JSON_FIELDS), json.loads)
    assert arena_allocator() == before


def test_arenas_are_not_faulted_in_over_another_arena_allocator() -> None:
    """Over an arena allocator a host program installed (here: a copy of the interpreter's, in another context),
    the pass leaves it in place and takes no arena of its own."""
    before = arena_allocator()
    other = _ArenaAllocator(12345, before[1], before[2])  # the same functions: a context pointer is all that differs
    ctypes.pythonapi.PyObject_SetArenaAllocator(ctypes.byref(other))
    try:
        installed = arena_allocator()
        served = secureml_audit_native.arenas_prefaulted()
        secureml_audit_native.log_dicts(table_of(25_000, random.Random(8)).to_batches(), logs_module._template,
                                        list(logs_module.TIMESTAMP_FIELDS), list(logs_module.JSON_FIELDS), json.loads)
        assert arena_allocator() == installed
        assert secureml_audit_native.arenas_prefaulted() == served
    finally:
        ctypes.pythonapi.PyObject_SetArenaAllocator(ctypes.byref(_ArenaAllocator(*before)))
    assert arena_allocator() == before


def test_pick_takes_the_items_in_order_each_with_a_reference_of_its_own() -> None:
    """`pick` (a result's dicts put in time order) gives `[items[i] for i in order]`: the same objects, repeated or
    left out as the order says, each with one more reference while the result lives; an index out of range or an
    order of another type is a ValueError, and nothing is taken."""
    rng = random.Random(11)
    items: list[Any] = [{"row": i} for i in range(5_000)] + [None, "text", 7, [1, 2]]
    for order in (list(range(len(items))), rng.sample(range(len(items)), len(items)),
                  [rng.randrange(len(items)) for _ in range(20_000)], [], [3, 3, 3]):
        before = [sys.getrefcount(item) for item in items[:50]]
        picked = secureml_audit_native.pick(items, pa.array(order, pa.int64()))
        assert len(picked) == len(order) and all(a is items[i] for a, i in zip(picked, order, strict=True))
        counts = [order.count(i) for i in range(50)]
        after = [sys.getrefcount(item) for item in items[:50]]
        assert [count - n for count, n in zip(after, counts, strict=True)] == before
        del picked
        assert [sys.getrefcount(item) for item in items[:50]] == before
    for bad in ([0, len(items)], [-1], [2**62]):
        with pytest.raises(ValueError, match="not a place"):
            secureml_audit_native.pick(items, pa.array(bad, pa.int64()))
    for other in (pa.array([0, 1], pa.int32()), pa.array([0, None], pa.int64())):
        with pytest.raises(ValueError, match="int64 array without nulls"):
            secureml_audit_native.pick(items, other)
    assert [sys.getrefcount(item) for item in items[:50]] == before


def test_a_result_out_of_time_order_in_storage_is_picked_into_it(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows stored by operation then time (two operations logged in turns) come back in time order, put there by
    `pick`: the dicts of the whole table converted at once."""
    from secureml.audit import AuditTrail
    from secureml.lake.table import Lake
    from secureml.materializer import materialize

    lake = tmp_path / "logs"
    trails = [AuditTrail(f"turn-{n}", log_dir=lake, bootstrap_servers="") for n in range(2)]
    for i in range(300):
        trails[i % 2].log_model_inference("model", f"row {i}", "yes", 0.5)
    for trail in trails:
        trail.close()
    materialize(lake, bootstrap_servers="", once=True)
    Lake(lake).compact_all(today="9999-12-31")  # every day counts as closed: rewritten by operation, then time
    picks: list[int] = []
    native = logs_module._native_pick

    def counting(items: list[Any], order: pa.Array) -> list[Any]:
        picks.append(len(order))
        return native(items, order)

    monkeypatch.setattr(logs_module, "_native_pick", counting)
    monkeypatch.setattr(logs_module, "STREAM_ROWS", 64)
    logs = get_audit_logs(log_dir=lake)
    assert picks == [len(logs)]
    assert_same_dicts(logs, whole(lake))


def test_time_order_is_the_three_key_order() -> None:
    """`time_order` gives what Arrow's sort by time, seq and operation gives (None for rows already in it): for rows in
    order, in sorted runs (files), shuffled, with many events at one microsecond (ordered by seq, then operation), in
    several chunks, and with a null time."""
    import pyarrow.compute as pc

    def reference(table: pa.Table) -> np.ndarray | None:
        order = pc.sort_indices(table, logs_module.ORDER).to_numpy()
        return None if np.array_equal(order, np.arange(len(order))) else order

    rng = random.Random(11)
    kinds = set()
    for _ in range(400):
        n = rng.choice([0, 1, 2, 3, 17, 200, 2000])
        kind = rng.choice(["in order", "runs", "shuffled", "ties"])
        times: list[int | None]
        if kind == "in order":
            times = sorted(rng.sample(range(10**12), n))
        elif kind == "runs":
            times = []
            while len(times) < n:
                times += sorted(rng.sample(range(10**12), n // 4 + 1))
            times = times[:n]
        elif kind == "shuffled":
            times = rng.sample(range(10**12), n)
        else:
            times = [rng.randint(0, 4) for _ in range(n)]
        if n > 2 and rng.random() < 0.1:
            times[rng.randrange(n)] = None
        table = pa.table({"timestamp": pa.array(times, pa.timestamp("us", "UTC")),
                          "seq": pa.array([rng.randint(0, 3) for _ in range(n)], pa.int64()),
                          "operation_id": pa.array([rng.choice("abc") for _ in range(n)])})
        if n > 3 and rng.random() < 0.5:
            table = pa.Table.from_batches(table.to_batches(max_chunksize=rng.randint(1, n)))
        ours, theirs = time_order(table), reference(table)
        assert (ours is None) == (theirs is None), kind
        if ours is not None:
            assert ours.tolist() == theirs.tolist(), kind  # type: ignore[union-attr]
            kinds.add(kind)
    assert {"runs", "shuffled", "ties"} <= kinds  # each way out of order met (a null time puts rows in order out)


def test_parts_start_with_the_first_size_then_hold_at_least_the_part_size() -> None:
    """`_parts` yields its first table once it holds `first` rows, then tables of at least `rows`, the rest last; the
    rows in order, none lost or repeated."""
    def sizes(batches: list[int], rows: int, first: int) -> list[int]:
        start = 0
        made = []
        for size in batches:
            made.append(pa.record_batch({"i": pa.array(range(start, start + size), pa.int64())}))
            start += size
        reader = pa.RecordBatchReader.from_batches(made[0].schema, made) if made else \
            pa.RecordBatchReader.from_batches(pa.schema({"i": pa.int64()}), [])
        parts = list(logs_module._parts(reader, rows, first))
        assert [i for part in parts for i in part["i"].to_pylist()] == list(range(start))
        return [part.num_rows for part in parts]

    assert sizes([5] * 5, 12, 5) == [5, 15, 5]
    assert sizes([3, 4, 16, 16, 16, 2], 32, 16) == [23, 32, 2]
    assert sizes([16, 16, 16], 32, 32) == [32, 16]
    assert sizes([7], 32, 16) == [7]
    assert sizes([], 32, 16) == []
