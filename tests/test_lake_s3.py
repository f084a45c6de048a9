"""The lake on object storage: materialised, queried, compacted, time-travelled and verified on an S3 endpoint."""

from __future__ import annotations

import json

import pytest
from deltalake import DeltaTable
from support.s3 import S3Lake

from conftest import Harness
from secureml.audit import AuditTrail, connect, count_events, get_audit_logs
from secureml.integrity import verify
from secureml.lake.table import Lake
from secureml.materializer import materialize


def _log(harness: Harness, operations: int) -> None:
    for i in range(operations):
        with AuditTrail(f"s3-op-{i % 2}", **harness.options()) as trail:
            for j in range(50):
                trail.log_model_inference("m", f"r{j}", j, 0.5)


def test_an_s3_lake_is_written_read_compacted_and_verified(
    embedded: Harness, s3_lake: S3Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every reader and the verifier work on a Delta table in a bucket, through the same settings as the writer."""
    monkeypatch.setenv("SECUREML_AUDIT_LAKE_URI", s3_lake.uri)
    monkeypatch.setenv("SECUREML_AUDIT_LAKE_STORAGE_OPTIONS", json.dumps(s3_lake.storage_options))
    _log(embedded, 2)
    assert materialize(embedded.log_dir).events == 104
    first = Lake(embedded.log_dir).snapshot().version
    _log(embedded, 2)
    assert materialize(embedded.log_dir).events == 104
    assert not (embedded.log_dir / "lake" / "events").exists(), "the table lives in the bucket, not on disk"
    table = DeltaTable(s3_lake.uri, storage_options=s3_lake.storage_options)
    assert all(uri.startswith("s3://") for uri in table.file_uris())
    assert count_events(embedded.log_dir) == 208
    logs = get_audit_logs(operation_name="s3-op-1", log_dir=embedded.log_dir, output="arrow")
    assert logs.num_rows == 104 and logs["seq"].to_pylist()[:3] == [0, 1, 2]
    assert get_audit_logs(log_dir=embedded.log_dir, output="arrow", as_of=first).num_rows == 104
    con = connect(embedded.log_dir)
    assert con.execute("SELECT count(DISTINCT operation_id) FROM events").fetchone()[0] == 4
    lake = Lake(embedded.log_dir)
    assert lake.compact_all(today="2999-01-01") >= 2
    assert len(lake.snapshot().files) == 1
    assert count_events(embedded.log_dir) == 208
    result = verify(embedded.log_dir)
    assert result.ok and result.events == 208, [f.message for f in result.errors]
    assert all(c.roots_match for c in result.checkpoints)
