"""Point lookups and result dicts: bloom filters in every data file, and dicts built column-wise that equal the rows."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from conftest import Harness
from secureml.audit import AuditTrail, get_audit_logs
from secureml.audit.events import envelope_fields, fields_of
from secureml.lake.table import BLOOM_FILTER_COLUMNS, Lake
from secureml.materializer import materialize
from secureml.query.logs import _iso_utc, _list_column, _shared_values, _to_logs


def _log_operations(log_dir: Path, operations: int) -> list[str]:
    """`operations` trails of a few events each (inference, access, a user request), materialised one by one."""
    ids = []
    for i in range(operations):
        with AuditTrail(f"op-{i % 2}", log_dir=log_dir, bootstrap_servers="", user=f"user_{i}",
                        context={"run": i, "nested": {"tags": ["a", "b"]}} if i % 2 else {"run": i}) as trail:
            ids.append(trail.operation_id)
            trail.log_model_inference("m", f"row-{i}", ["low", i], 0.5)
            trail.log_data_access("customers", ["email", "age"], i, "support")
            trail.log_user_request("access", f"subject_{i}", {"ticket": i}, "completed")
        materialize(log_dir)
    return ids


@pytest.fixture
def lake_with_operations(embedded: Harness) -> tuple[Path, list[str]]:
    """A lake of 6 operations, its closed days compacted (files written by both append and compaction)."""
    ids = _log_operations(embedded.log_dir, 6)
    Lake(embedded.log_dir).compact_all(today="2999-01-01")
    return embedded.log_dir, ids


def test_every_data_file_has_bloom_filters_on_the_lookup_columns(lake_with_operations: tuple[Path, list[str]]) -> None:
    """Each row group of each data file of the newest version carries a bloom filter for operation_id, user, user_id."""
    log_dir, _ids = lake_with_operations
    files = [f.uri for f in Lake(log_dir).snapshot().files]
    assert files
    con = duckdb.connect()
    rows = con.sql("SELECT path_in_schema, bloom_filter_offset FROM parquet_metadata(?) "
                   "WHERE path_in_schema IN ('operation_id', 'user', 'user_id')", params=[files]).fetchall()
    assert {name for name, _ in rows} == set(BLOOM_FILTER_COLUMNS)
    assert all(offset is not None for _, offset in rows), rows


def test_bloom_filters_rule_out_absent_ids_and_keep_present_ones(lake_with_operations: tuple[Path, list[str]]) -> None:
    """DuckDB's bloom probe excludes every row group for an unknown uuid and keeps the one holding a logged id."""
    log_dir, ids = lake_with_operations
    files = [f.uri for f in Lake(log_dir).snapshot().files]
    con = duckdb.connect()

    def excluded(column: str, value: str) -> list[bool]:
        return [row[0] for f in files for row in con.sql(
            "SELECT bloom_filter_excludes FROM parquet_bloom_probe(?, ?, ?)", params=[f, column, value]).fetchall()]

    assert all(excluded("operation_id", str(uuid.uuid4())))
    assert not all(excluded("operation_id", ids[3]))
    # user and user_id are stored as pseudonyms (the privacy policy's default): probe the stored forms.
    user, user_id = con.execute("SELECT any_value(\"user\"), any_value(user_id) FROM read_parquet(?) "
                                "WHERE operation_id = ?", [files, ids[3]]).fetchall()[0]
    assert user.startswith("ps_") and user_id.startswith("ps_")
    assert not all(excluded("user", user)) and not all(excluded("user_id", user_id))
    assert all(excluded("user", "ps_" + "x" * 26))
    assert get_audit_logs(operation_id=str(uuid.uuid4()), log_dir=log_dir) == []
    assert {e["seq"] for e in get_audit_logs(operation_id=ids[3], log_dir=log_dir)} == {0, 1, 2, 3, 4}


def test_result_dicts_equal_the_arrow_rows_and_each_is_its_own(lake_with_operations: tuple[Path, list[str]]) -> None:
    """Dicts of mixed event types hold the Arrow rows' values, parsed JSON and lists, none shared between rows."""
    log_dir, _ids = lake_with_operations
    logs = get_audit_logs(log_dir=log_dir)
    table = get_audit_logs(log_dir=log_dir, output="arrow")
    assert len(logs) == table.num_rows == 6 * 5
    assert [e["event_id"] for e in logs] == table["event_id"].to_pylist()
    inference = [e for e in logs if e["event_type"] == "model_inference"]
    assert inference[1]["input_data"] == "row-1" and inference[1]["output"] == ["low", 1]
    assert inference[1]["context"] == {"run": 1, "nested": {"tags": ["a", "b"]}}
    access = [e for e in logs if e["event_type"] == "data_access"]
    assert access[2]["columns_accessed"] == ["email", "age"] and "request_type" not in access[2]
    requests = [e for e in logs if e["event_type"] == "user_request"]
    assert requests[4]["details"] == {"ticket": 4} and requests[4]["user_id"] == "subject_4"
    assert all(isinstance(e["timestamp"], str) and e["timestamp"].endswith("+00:00") for e in logs)
    # Rows are the caller's: changing one row's lists and objects changes no other row.
    logs[0]["regulations"].append("changed")
    logs[0]["context"]["run"] = "changed"
    access[0]["columns_accessed"].append("changed")
    inference[1]["context"]["nested"]["tags"].append("changed")
    assert all("changed" not in e["regulations"] for e in logs[1:])
    assert all(e["context"]["run"] != "changed" for e in logs[1:])
    assert access[1]["columns_accessed"] == ["email", "age"]
    assert inference[3]["context"]["nested"]["tags"] == ["a", "b"]
    assert get_audit_logs(log_dir=log_dir)[0] != logs[0]


def test_dicts_hold_constant_columns_once_per_row_in_schema_order(lake_with_operations: tuple[Path, list[str]]) -> None:
    """Columns equal in every row (a list, a text) read as the Arrow rows, keys in schema order, no list shared."""
    log_dir, _ids = lake_with_operations
    logs = get_audit_logs(log_dir=log_dir, event_type="data_access")
    table = get_audit_logs(log_dir=log_dir, event_type="data_access", output="arrow")
    assert len(logs) == table.num_rows == 6
    assert list(logs[0]) == [*envelope_fields(), *(f for f in fields_of("data_access") if f not in envelope_fields())]
    for name in ("purpose", "dataset_name", "num_records", "seq", "operation_id", "columns_accessed", "regulations"):
        assert [e[name] for e in logs] == table[name].to_pylist(), name
    assert all(e["purpose"] == "support" and e["columns_accessed"] == ["email", "age"] for e in logs)
    logs[0]["columns_accessed"].append("changed")
    logs[0]["regulations"].append("changed")
    assert all(e["columns_accessed"] == ["email", "age"] and "changed" not in e["regulations"] for e in logs[1:])


@pytest.mark.parametrize("rows", [[["a"], ["b"]], [["a", "b"], ["c", "d"]], [[], []], [["a"], None, ["b", "c"]], []])
def test_list_columns_read_as_arrow_rows_each_its_own(rows: list[list[str] | None]) -> None:
    """List columns of equal or ragged lengths, with nulls or offsets not from 0, give Arrow's rows, no list shared."""
    column = pa.chunked_array([pa.array(rows, pa.large_list(pa.large_string()))], pa.large_list(pa.large_string()))
    listed = _list_column(column)
    assert listed == rows
    assert len({id(row) for row in listed if row is not None}) == sum(row is not None for row in listed)
    shifted = pa.ListArray.from_arrays(pa.array([1, 2, 3], pa.int32()), pa.array(["x", "a", "b", "y"]))
    assert _list_column(pa.chunked_array([shifted])) == [["a"], ["b"]]


_UTC = dt.UTC


@pytest.mark.parametrize("times", [
    [dt.datetime(2026, 1, 12, 8, 10, 19, 200000, _UTC), dt.datetime(2026, 1, 12, 8, 10, 19, 0, _UTC)],
    [dt.datetime(2026, 1, 12, 8, 10, 19, 5, _UTC), None],
    [dt.datetime(999, 12, 31, 23, 59, 59, 999999, _UTC), dt.datetime(2026, 1, 1, tzinfo=_UTC)],
    [],
])
def test_times_read_as_iso_utc_text_whatever_their_width_or_nulls(times: list[dt.datetime | None]) -> None:
    """Timestamps, split in chunks and sliced, read as Python's ISO text with microseconds (None stays None)."""
    column = pa.chunked_array([pa.array([None, *times], pa.timestamp("us", "UTC")).slice(1), pa.array(times[:1],
                              pa.timestamp("us", "UTC"))], pa.timestamp("us", "UTC"))
    expected = [None if t is None else t.isoformat(timespec="microseconds") for t in [*times, *times[:1]]]
    assert _iso_utc(column).to_pylist() == expected


def test_dicts_in_a_given_order_equal_the_rows_taken_in_that_order(
        lake_with_operations: tuple[Path, list[str]]) -> None:
    """Dicts ordered by row indices (several event types, or one) equal the dicts of the table taken in that order."""
    log_dir, _ids = lake_with_operations
    for table in (get_audit_logs(log_dir=log_dir, output="arrow"),
                  get_audit_logs(log_dir=log_dir, event_type="data_access", output="arrow")):
        order = np.random.default_rng(7).permutation(table.num_rows)
        assert _to_logs(table, order) == _to_logs(table.take(order))
        assert [list(log) for log in _to_logs(table, order)] == [list(log) for log in _to_logs(table.take(order))]


def test_large_text_and_time_columns_read_as_arrow_rows_repeated_values_shared() -> None:
    """A large column of few distinct texts or times (and nulls) reads as Arrow's rows, each distinct value once."""
    names = pa.chunked_array([pa.array([f"op-{i % 7}" if i % 5 else None for i in range(20_000)])] * 2)
    shared = _shared_values(names)
    assert shared == names.to_pylist()
    assert len({id(value) for value in shared}) == 8  # 7 texts and None
    start = dt.datetime(2026, 1, 12, 8, 10, 19, 200000, _UTC)
    times = pa.chunked_array([pa.array([start + dt.timedelta(seconds=i % 3) for i in range(20_000)],
                                       pa.timestamp("us", "UTC"))])
    assert _shared_values(times, _iso_utc) == _iso_utc(times).to_pylist()
    distinct = pa.chunked_array([pa.array([str(i) for i in range(20_000)])])
    assert _shared_values(distinct) == distinct.to_pylist()


def test_dicts_of_a_few_rows_equal_those_built_column_wise(lake_with_operations: tuple[Path, list[str]]) -> None:
    """Types with a few rows (converted row by row) give the dicts the column-wise conversion gives for many rows."""
    log_dir, _ids = lake_with_operations
    table = get_audit_logs(log_dir=log_dir, output="arrow")
    few = _to_logs(table)
    many = _to_logs(pa.concat_tables([table] * 80))  # every event type >= 64 rows: column-wise
    assert few == many[:len(few)]
    assert [list(log) for log in few] == [list(log) for log in many[:len(few)]]
    assert all(type(log[k]) is type(other[k]) for log, other in zip(few, many) for k in log)
