"""The embedded log: several writing processes, crash-torn tails, corrupt records, owner-only files."""

from __future__ import annotations

import multiprocessing
import os
import stat
import threading
from pathlib import Path

from conftest import Harness
from secureml.audit import AuditTrail, count_events, get_audit_logs
from secureml.audit.transports.embedded import list_segments
from secureml.materializer import materialize
from secureml.stream.sources import dead_letters


def _log_many(log_dir: str, name: str, operations: int, events: int) -> None:
    for _ in range(operations):
        with AuditTrail(name, log_dir=log_dir, bootstrap_servers="") as trail:
            for i in range(events):
                trail.log_model_inference("m", f"req-{i}", i, 0.5)


def test_two_processes_log_into_one_dir(embedded: Harness) -> None:
    """Two processes logging into one log_dir at the same time: every event is kept, in order."""
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_log_many, args=(str(embedded.log_dir), f"proc{i}", 20, 500)) for i in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
        assert w.exitcode == 0
    assert count_events(embedded.log_dir) == 2 * 20 * 502
    for name in ("proc0", "proc1"):
        logs = get_audit_logs(operation_name=name, log_dir=embedded.log_dir, output="arrow")
        assert logs.num_rows == 20 * 502
        per_op: dict[str, list[int]] = {}
        for op, seq in zip(logs["operation_id"].to_pylist(), logs["seq"].to_pylist()):
            per_op.setdefault(op, []).append(seq)
        assert all(seqs == list(range(502)) for seqs in per_op.values())


def test_files_are_owner_only(embedded: Harness) -> None:
    """Segments, lake files, manifest and catalog are readable by their owner only."""
    _log_many(str(embedded.log_dir), "perm", 2, 10)
    materialize(embedded.log_dir)
    checked = 0
    for path in embedded.log_dir.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
        checked += 1
    assert checked > 6


def test_torn_tail_is_ignored_until_complete(embedded: Harness) -> None:
    """A record half-written at a crash is invisible; everything before it is readable."""
    _log_many(str(embedded.log_dir), "torn", 1, 10)
    segment = list_segments(embedded.log_dir)[0]
    whole = segment.read_bytes()
    with open(segment, "ab") as f:
        f.write(whole[:30])  # the start of a frame whose body never arrived
    assert count_events(embedded.log_dir) == 12
    assert materialize(embedded.log_dir).events == 12
    assert dead_letters(embedded.log_dir) == []


def test_corrupt_record_goes_to_dead_letters(embedded: Harness) -> None:
    """A record whose bytes changed on disk is set aside with its reason; the others flow on."""
    _log_many(str(embedded.log_dir), "corrupt", 1, 10)
    segment = list_segments(embedded.log_dir)[0]
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF
    segment.write_bytes(bytes(data))
    stats = materialize(embedded.log_dir)
    assert stats.events == 11 and stats.dead_letters == 1
    letters = dead_letters(embedded.log_dir)
    assert len(letters) == 1 and letters[0]["reason"] in ("crc32 mismatch", "broken framing")
    assert count_events(embedded.log_dir) == 11


def test_materialize_is_idempotent_and_resumes(embedded: Harness) -> None:
    """Running the materializer again adds nothing; new events are added exactly once."""
    _log_many(str(embedded.log_dir), "resume", 3, 100)
    assert materialize(embedded.log_dir).events == 306
    assert materialize(embedded.log_dir).events == 0
    _log_many(str(embedded.log_dir), "resume", 1, 100)
    assert materialize(embedded.log_dir).events == 102
    assert count_events(embedded.log_dir) == 408
    assert materialize(embedded.log_dir, replay=True).events == 408
    assert count_events(embedded.log_dir) == 408


def test_duckdb_catalog_opens_read_only_while_logging(embedded: Harness) -> None:
    """log_dir/audit.duckdb shows one table version; a writer replaces it, never holds it, while it is open."""
    import duckdb

    _log_many(str(embedded.log_dir), "catalog", 2, 5)
    materialize(embedded.log_dir)
    con = duckdb.connect(str(embedded.log_dir / "audit.duckdb"), read_only=True)
    try:
        _log_many(str(embedded.log_dir), "catalog", 1, 5)
        materialize(embedded.log_dir)
        assert con.execute("SELECT count(*) FROM events").fetchone()[0] == 14  # the version it opened
    finally:
        con.close()
    con = duckdb.connect(str(embedded.log_dir / "audit.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM events").fetchone()[0] == 21
        rows = con.execute("SELECT status, events FROM operations ORDER BY start_time").fetchall()
        assert rows == [("completed", 7)] * 3
    finally:
        con.close()


def test_large_embedded_tail_is_materialised_by_the_reader(embedded: Harness, tmp_path: Path) -> None:
    """A reader facing a large unmaterialised tail materialises it, then answers from the lake."""
    _log_many(str(embedded.log_dir), "auto", 1, 30_000)
    assert count_events(embedded.log_dir) == 30_002  # counting is read-only
    assert len(get_audit_logs(operation_name="auto", log_dir=embedded.log_dir, limit=10)) == 10
    from secureml.lake.table import Lake

    assert sum(f.rows for f in Lake(embedded.log_dir).snapshot().files) == 30_002


def test_owner_only_blocks_on_two_threads_overlap_and_the_last_restores_the_mask(tmp_path: Path) -> None:
    """`owner_only` on two threads at once (a maintenance lease renewed while a day is rewritten): the second enters
    without waiting for the first, a file made after the first left is still owner-only, and the process's own mask
    comes back only when the last one leaves."""
    from secureml.audit._fs import owner_only

    def mask() -> int:
        current = os.umask(0o077)
        os.umask(current)
        return current

    original = os.umask(0o022)
    try:
        inside, leave, entered = threading.Event(), threading.Event(), threading.Event()

        def first() -> None:
            with owner_only():
                inside.set()
                leave.wait(30)

        masks: list[int] = []

        def second() -> None:
            with owner_only():
                entered.set()
                leave.wait(30)
                a.join(30)  # the first has left
                masks.append(mask())
                (tmp_path / "made").write_text("x")

        a = threading.Thread(target=first)
        a.start()
        assert inside.wait(30)
        b = threading.Thread(target=second)
        b.start()
        assert entered.wait(5)  # not held up by the first block
        assert mask() == 0o077
        leave.set()
        b.join(30)
        assert masks == [0o077] and stat.S_IMODE((tmp_path / "made").stat().st_mode) == 0o600
        assert mask() == 0o022
    finally:
        leave.set()
        os.umask(original)
