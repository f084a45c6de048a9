"""The reader's operation index: an operation_id lookup reads only the data files holding the operation, and
answers exactly what a scan of every file of the table answers as the table changes (commits, compaction,
deletes, erasure, a file rewritten in place), without writing anything."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import DeltaTable
from test_lookup import _log_operations
from test_privacy import log_one_subject

from conftest import Harness
from secureml.audit import erase_subject, get_audit_logs
from secureml.audit.privacy.reveal import ERASED
from secureml.lake.operation_index import OperationIndex
from secureml.lake.table import Lake
from secureml.materializer import materialize


def _files(log_dir: Path) -> list[str]:
    return [f.uri for f in Lake(log_dir).snapshot().files]


def _operation_ids(path: str) -> list[str]:
    return pq.read_table(path, columns=["operation_id"])["operation_id"].to_pylist()


def _scanned(log_dir: Path, operation_id: str) -> list[str]:
    """Event ids of an operation as a reader that knows no index finds them: every file of the newest version."""
    rows = duckdb.connect().execute("SELECT event_id FROM read_parquet(?, union_by_name = true) "
                                    "WHERE operation_id = ? ORDER BY timestamp, seq", [_files(log_dir), operation_id])
    return [row[0] for row in rows.fetchall()]


def _looked_up(log_dir: Path, operation_id: str) -> list[str]:
    return [log["event_id"] for log in get_audit_logs(operation_id=operation_id, log_dir=log_dir)]


def test_lookup_equals_a_scan_of_every_file_across_commits_and_compaction(embedded: Harness) -> None:
    """Operations committed before and after the index was built, then compacted, read exactly as a full scan."""
    log_dir = embedded.log_dir
    first = _log_operations(log_dir, 3)
    for op in first:
        assert _looked_up(log_dir, op) == _scanned(log_dir, op) and len(_scanned(log_dir, op)) == 5
    later = _log_operations(log_dir, 2)  # new files, unknown to the index built above
    for op in first + later:
        assert _looked_up(log_dir, op) == _scanned(log_dir, op) and len(_scanned(log_dir, op)) == 5
    assert Lake(log_dir).compact_all(today="2999-01-01") > 0
    for op in first + later:
        assert _looked_up(log_dir, op) == _scanned(log_dir, op) and len(_scanned(log_dir, op)) == 5
    assert get_audit_logs(operation_id=str(uuid.uuid4()), log_dir=log_dir) == []


def test_only_the_files_holding_the_operation_are_kept(embedded: Harness) -> None:
    """Of one file per materialised operation, the index keeps the one holding the id; a missing file is kept."""
    log_dir = embedded.log_dir
    ids = _log_operations(log_dir, 4)
    files = _files(log_dir)
    assert len(files) >= 4
    con = duckdb.connect()
    index = OperationIndex()
    held = index.files_holding(con, files, ids[2])
    assert held == [f for f in files if ids[2] in _operation_ids(f)]
    assert len(held) == 1
    assert index.files_holding(con, files, str(uuid.uuid4())) == []
    gone = str(log_dir / "gone.parquet")
    assert index.files_holding(con, [*files, gone], ids[0])[-1] == gone


def test_a_delete_is_seen_by_the_next_lookup(embedded: Harness) -> None:
    """After a Delta delete (how retention expires events) the deleted operation is gone and the others stay."""
    log_dir = embedded.log_dir
    ids = _log_operations(log_dir, 3)
    assert len(_looked_up(log_dir, ids[1])) == 5  # the index now knows the files before the delete
    DeltaTable(Lake(log_dir).uri).delete(f"operation_id = '{ids[1]}'")
    assert _looked_up(log_dir, ids[1]) == [] == _scanned(log_dir, ids[1])
    assert _looked_up(log_dir, ids[0]) == _scanned(log_dir, ids[0]) and len(_scanned(log_dir, ids[0])) == 5


def test_an_erased_subject_reads_erased_through_the_lookup(tmp_path: Path) -> None:
    """A lookup of a materialised operation before and after erase_subject: the values turn to <erased>."""
    log_dir = tmp_path / "logs"
    op = log_one_subject(log_dir)
    materialize(log_dir, once=True)
    before = get_audit_logs(operation_id=op, log_dir=log_dir, event_type="model_inference")
    assert before[0]["input_data"] == "user_12345 features"
    erase_subject("user_12345", log_dir)
    materialize(log_dir, once=True)
    after = get_audit_logs(operation_id=op, log_dir=log_dir, event_type="model_inference")
    assert after[0]["input_data"] == ERASED and after[0]["event_id"] == before[0]["event_id"]


def test_a_file_rewritten_in_place_is_indexed_again(embedded: Harness) -> None:
    """A data file changed under the same path (never by delta-rs; by hand) is read again, not trusted from memory."""
    log_dir = embedded.log_dir
    ids = _log_operations(log_dir, 2)
    assert len(_looked_up(log_dir, ids[0])) == 5
    (path,) = [f for f in _files(log_dir) if ids[0] in _operation_ids(f)]
    table = pq.read_table(path)
    renamed = pc.if_else(pc.equal(table["operation_id"], ids[0]), "renamed-operation", table["operation_id"])
    column = table.schema.get_field_index("operation_id")
    table = table.set_column(column, "operation_id", renamed.cast(pa.large_string()))
    stat = os.stat(path)
    pq.write_table(table, path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert len(_looked_up(log_dir, "renamed-operation")) == 5
    assert _looked_up(log_dir, ids[0]) == []


def test_lookups_write_nothing_and_other_readers_see_the_same_table(embedded: Harness) -> None:
    """The index lives in the reader: after lookups the log directory holds the same files, the table the same rows."""
    log_dir = embedded.log_dir
    ids = _log_operations(log_dir, 3)
    before = sorted(p for p in log_dir.rglob("*") if p.is_file())
    version = DeltaTable(Lake(log_dir).uri).version()
    for op in ids:
        _looked_up(log_dir, op)
    assert sorted(p for p in log_dir.rglob("*") if p.is_file()) == before
    delta = DeltaTable(Lake(log_dir).uri)
    assert delta.version() == version
    assert sorted(delta.to_pyarrow_table(columns=["event_id"])["event_id"].to_pylist()) == sorted(
        e for op in ids for e in _scanned(log_dir, op))
