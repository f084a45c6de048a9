"""The explorer's lake index over real trails: kept per data file, up to date after commits, compaction and erasures."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from support.s3 import S3Lake
from support.ui import fetch, serve

import secureml.ui.explorer as explorer_module
from conftest import Harness
from secureml.audit import AuditTrail, get_audit_logs
from secureml.audit.privacy.erase import erase_subject
from secureml.lake.table import Lake
from secureml.materializer import materialize_embedded
from secureml.ui.explorer import Explorer, OperationFilters
from secureml.ui.index import IndexPending, LakeIndex


def logged(log_dir: Path, name: str, user: str = "user_1", events: int = 2) -> str:
    """One closed operation of ``events`` data accesses (plus its start and close); returns its id."""
    with AuditTrail(name, log_dir=log_dir, bootstrap_servers="", user=user, regulations=["GDPR"]) as trail:
        for n in range(events):
            trail.log_data_access("customers", ["email"], n + 1, "support")
        return trail.operation_id


def test_a_new_version_is_summarised_from_its_new_files_only(tmp_path: Path) -> None:
    """After a commit the index keeps each earlier file's summary as it was and adds the new file's."""
    log_dir = tmp_path / "logs"
    first = logged(log_dir, "first")
    materialize_embedded(log_dir)
    index = LakeIndex(log_dir)
    assert index.current().listed["operation_id"].to_pylist() == [first]
    earlier = {path: dict(parts) for path, parts in index._parts.items()}
    second = logged(log_dir, "second")
    materialize_embedded(log_dir)
    assert index.current().listed["operation_id"].to_pylist() == [second, first]
    assert len(index._parts) == len(earlier) + 1
    assert all(index._parts[path][name] is part for path, parts in earlier.items() for name, part in parts.items())


def test_compaction_replaces_the_summaries_of_the_files_it_rewrote(tmp_path: Path) -> None:
    """Files a compaction removed leave the index, its new file is summarised, and every operation lists once."""
    log_dir = tmp_path / "logs"
    ids = []
    for n in range(3):
        ids.append(logged(log_dir, f"op_{n}"))
        materialize_embedded(log_dir)
    index = LakeIndex(log_dir)
    before = index.current()
    lake = Lake(log_dir)
    assert lake.compact_all(today="2999-01-01") == 3  # every day before 2999 is closed: its files are merged
    after = index.current()
    assert set(index._parts) == {f.path for f in lake.snapshot().files} and len(index._parts) == 1
    assert after.listed["operation_id"].to_pylist() == before.listed["operation_id"].to_pylist() == ids[::-1]
    assert after.per_day["n"].to_pylist() == before.per_day["n"].to_pylist()


def test_a_timeline_across_two_commits_and_the_tail(tmp_path: Path) -> None:
    """An operation with events in two data files and the unmaterialised tail shows them all, linked, in seq order."""
    log_dir = tmp_path / "logs"
    trail = AuditTrail("long_running", log_dir=log_dir, bootstrap_servers="", user="user_1")
    for part in range(3):
        for n in range(20):
            trail.log_data_access("customers", ["email"], n + 1, f"part {part}")
        trail.flush()
        if part < 2:
            materialize_embedded(log_dir)
    trail.close()
    explorer = Explorer(log_dir)
    summary, first = explorer.operation(trail.operation_id, 1)
    _, second = explorer.operation(trail.operation_id, 2)
    assert summary is not None and summary["events"] == 62 and summary["status"] == "completed"
    events = [row["event"] for row in first.rows + second.rows]
    assert [e.seq for e in events] == list(range(62)) and first.has_next and not second.has_next
    assert {e.chain for e in events} == {"linked"}


def test_an_erasure_shows_once_keys_are_looked_up_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A user erased after the index was built shows as the reading path shows it on the next key renewal
    (no longer by name), and the user filter still finds the operation."""
    log_dir = tmp_path / "logs"
    op = logged(log_dir, "scoring", user="subject_77")
    materialize_embedded(log_dir)
    explorer = Explorer(log_dir)
    by_subject = OperationFilters(user="subject_77")
    assert [r["user"] for r in explorer.operations(by_subject, 1).rows] == ["subject_77"]
    erase_subject("subject_77", log_dir)  # embedded: the environment names no broker
    monkeypatch.setattr(explorer_module, "CACHE_SECONDS", 0.0)  # the renewal a page sees within 30 s
    shown = [r["user"] for r in explorer.operations(by_subject, 1).rows]
    assert shown == [get_audit_logs(operation_id=op, log_dir=log_dir)[0]["user"]] and shown != ["subject_77"]


def test_the_index_of_a_lake_in_a_bucket(embedded: Harness, s3_lake: S3Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over a Delta table in a bucket the index lists every operation after each commit and a compaction."""
    monkeypatch.setenv("SECUREML_AUDIT_LAKE_URI", s3_lake.uri)
    monkeypatch.setenv("SECUREML_AUDIT_LAKE_STORAGE_OPTIONS", json.dumps(s3_lake.storage_options))
    explorer = Explorer(embedded.log_dir)
    first = logged(embedded.log_dir, "first", events=60)
    materialize_embedded(embedded.log_dir)
    assert [r["operation_id"] for r in explorer.operations(OperationFilters(), 1).rows] == [first]
    second = logged(embedded.log_dir, "second")
    materialize_embedded(embedded.log_dir)
    assert [r["operation_id"] for r in explorer.operations(OperationFilters(), 1).rows] == [second, first]
    assert Lake(embedded.log_dir).compact_all(today="2999-01-01") == 2
    assert [r["operation_id"] for r in explorer.operations(OperationFilters(user="user_1"), 1).rows] == [second, first]
    summary, page = explorer.operation(first, 2)
    assert summary is not None and summary["events"] == 62
    assert [r["event"].seq for r in page.rows] == list(range(50, 62))


class Gate:
    """Holds the index's builds until opened: what a build of a 10M-event lake taking seconds looks like."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.open = threading.Event()
        build = LakeIndex._build

        def held(index: LakeIndex, *args: object) -> object:
            assert self.open.wait(60), "the test never opened the gate"
            return build(index, *args)

        monkeypatch.setattr(LakeIndex, "_build", held)


def held_lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str, Gate]:
    """A lake of one materialised operation (its id), and a closed gate before the index's builds."""
    log_dir = tmp_path / "logs"
    first = logged(log_dir, "first")
    materialize_embedded(log_dir)
    return log_dir, first, Gate(monkeypatch)


def test_a_page_that_cannot_wait_gets_the_last_complete_index_marked_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a budget, a build still running leaves the caller the last complete index (behind) until it is done."""
    log_dir, first, gate = held_lake(tmp_path, monkeypatch)
    index = LakeIndex(log_dir, wait=0.05)
    with pytest.raises(IndexPending) as pending:
        index.state()
    assert pending.value.events == 4 and pending.value.files == 1
    gate.open.set()
    index.wait = None
    assert index.state().index.listed["operation_id"].to_pylist() == [first]
    gate.open.clear()
    index.wait = 0.05
    second = logged(log_dir, "second")
    materialize_embedded(log_dir)
    stale = index.state()
    assert stale.behind and stale.index.listed["operation_id"].to_pylist() == [first]
    gate.open.set()
    index.wait = None
    fresh = index.state()
    assert not fresh.behind and fresh.index.listed["operation_id"].to_pylist() == [second, first]


def test_pages_say_the_index_is_being_built_and_then_that_it_is_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before the first index: 503, Retry-After and a page that reloads; later, the last index with a notice."""
    log_dir, first, gate = held_lake(tmp_path, monkeypatch)
    with serve(log_dir, verify=False, index_wait=0.05) as served:
        reply = fetch(served.url + "/operations")
        assert reply.status == 503 and reply.headers["retry-after"] == "2"
        assert "Indexing the audit trail" in reply.text and '<meta http-equiv="refresh" content="2">' in reply.text
        assert "4 events" in reply.text
        gate.open.set()
        deadline = time.monotonic() + 60
        while (reply := fetch(served.url + "/operations")).status == 503 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert reply.status == 200 and first in reply.text and "being indexed" not in reply.text
        gate.open.clear()
        second = logged(log_dir, "second")
        materialize_embedded(log_dir)
        behind = fetch(served.url + "/operations")
        assert behind.status == 200 and first in behind.text and second not in behind.text
        assert "newest\nevents are being indexed" in behind.text
        unknown_yet = fetch(served.url + f"/operations/{second}")
        assert unknown_yet.status == 503, "an operation the index may not hold yet is not reported missing"
        gate.open.set()
        deadline = time.monotonic() + 60
        while second not in (reply := fetch(served.url + "/operations")).text and time.monotonic() < deadline:
            time.sleep(0.1)
        assert second in reply.text and "being indexed" not in reply.text
