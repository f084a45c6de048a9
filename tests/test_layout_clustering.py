"""A closed day's rewrite in operation order: every row exactly once, bounded by DuckDB's sort, fenced
against appends to the day and against other compactors, and done once per day."""

from __future__ import annotations

import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake.exceptions import CommitFailedError

from conftest import Harness
from secureml.audit import AuditTrail, count_events, get_audit_logs
from secureml.audit.exceptions import LakeError
from secureml.integrity import verify
from secureml.lake import table as table_module
from secureml.lake.table import CLUSTERED, LEASE_SECONDS_ENV, MAINTENANCE_LEASE, SPILL_DIR, Lake
from secureml.materializer import materialize

CLOSED = "2999-01-01"  # as `today`: every day before it is closed
NAMES = ("zeta", "älpha-模型", "mid", "Zeta")  # non-ASCII; capitals sort first (byte order, not a collation)


def _commits(log_dir: Path, commits: int, events: int) -> None:
    """Commits of events of several operation names, interleaved in time as a service logs them."""
    for i in range(commits):
        trails = [AuditTrail(name, log_dir=log_dir, bootstrap_servers="") for name in NAMES]
        for j in range(events):
            for trail in trails:
                trail.log_model_inference("m", f"{i}/{j} naïve \U0001f600", {"score": j * 10**12}, 0.5)
        for trail in trails:
            trail.close()
        materialize(log_dir)


def _rows(log_dir: Path, **kw: Any) -> Counter[tuple[str, str, str]]:
    table = get_audit_logs(log_dir=log_dir, output="arrow", **kw)
    return Counter(zip(table["event_id"].to_pylist(), table["hash"].to_pylist(), table["operation_name"].to_pylist()))


def _order(file: Path) -> list[tuple[str, int]]:
    """(operation_name, timestamp) of a data file's rows as stored."""
    table = pq.read_table(file, columns=["operation_name", "timestamp"])
    return list(zip(table["operation_name"].to_pylist(), pa.compute.cast(table["timestamp"], pa.int64()).to_pylist()))


def test_a_closed_day_is_rewritten_in_operation_order_every_row_once(
    embedded: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The day's rows come back sorted by (operation_name, timestamp) across files of the target size, none
    lost or doubled; time travel still reads the version before, and the lake verifies at both."""
    _commits(embedded.log_dir, 3, events=200)
    lake = Lake(embedded.log_dir)
    before, version = _rows(embedded.log_dir), lake.snapshot().version
    assert len(lake.snapshot().files) == 3 and sum(before.values()) >= 3 * 200 * len(NAMES)
    assert _order(Path(lake.snapshot().files[0].uri)) != sorted(_order(Path(lake.snapshot().files[0].uri)))
    monkeypatch.setattr(table_module, "TARGET_FILE_BYTES", 30_000)  # several files out of one sorted stream
    monkeypatch.setattr(table_module, "SMALL_FILE_BYTES", 1)
    monkeypatch.setattr(table_module, "CLUSTER_BATCH_ROWS", 100)

    assert lake.compact(today=CLOSED) == 3
    files = lake.snapshot().files
    assert len(files) > 1
    assert _rows(embedded.log_dir) == before
    for f in files:  # sorted runs of whole batches (delta-rs's writer may interleave the batches of its threads)
        stored = _order(Path(f.uri))
        descents = sum(later < earlier for earlier, later in zip(stored, stored[1:]))
        assert descents <= f.rows // 100
        assert descents < len(stored) // 10  # time order would descend at nearly every row
    assert {f.date for f in files} == {files[0].date}
    assert lake.snapshot().position(CLUSTERED + files[0].date) == sum(before.values())
    assert lake.compact(today=CLOSED) == 0  # clustered: not due again
    assert _rows(embedded.log_dir, as_of=version) == before
    assert verify(embedded.log_dir).ok and verify(embedded.log_dir, as_of=version).ok
    assert not (lake.root / SPILL_DIR).exists()
    assert all(stat.S_IMODE(Path(f.uri).stat().st_mode) & 0o077 == 0 for f in files)


def test_a_day_compacted_while_it_was_today_is_rewritten_once_closed(
    embedded: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Today's bins keep time order; once the day is closed it is clustered even with no small file left, and
    late events make it due again only when two small files pile up."""
    monkeypatch.setattr(table_module, "COMPACT_SMALL_FILES", 3)
    _commits(embedded.log_dir, 3, events=20)  # the third commit's materializer merges today's three files
    lake = Lake(embedded.log_dir)
    (binned,) = lake.snapshot().files
    assert _order(Path(binned.uri)) != sorted(_order(Path(binned.uri)))
    monkeypatch.setattr(table_module, "SMALL_FILE_BYTES", 1)  # no file is small: only the missing order is due
    assert lake.compaction_due(today=CLOSED)
    assert lake.compact_all(today=CLOSED) == 1
    (clustered,) = lake.snapshot().files
    assert _order(Path(clustered.uri)) == sorted(_order(Path(clustered.uri)))
    assert not lake.compaction_due(today=CLOSED)

    monkeypatch.setattr(table_module, "SMALL_FILE_BYTES", Path(clustered.uri).stat().st_size)  # later ones: small
    monkeypatch.setattr(table_module, "COMPACT_SMALL_FILES", 99)
    _commits(embedded.log_dir, 1, events=2)  # a late file of the clustered day: one small file is not due
    assert not lake.compaction_due(today=CLOSED)
    _commits(embedded.log_dir, 1, events=2)
    assert lake.compact_all(today=CLOSED) == 3  # the clustered file and the two late ones
    (again,) = lake.snapshot().files
    assert _order(Path(again.uri)) == sorted(_order(Path(again.uri)))
    assert again.rows == count_events(embedded.log_dir) == len(_rows(embedded.log_dir))


APPEND = """
import sys
from secureml.audit import AuditTrail
from secureml.materializer import materialize
with AuditTrail("late", log_dir=sys.argv[1], bootstrap_servers="") as trail:
    trail.log_model_inference("m", "late input", 1, 0.5)
materialize(sys.argv[1])
"""


def test_an_append_to_the_day_during_its_rewrite_is_never_lost(
    embedded: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process commits to the day while its rewrite streams: the rewrite is refused, nothing is lost or
    doubled, and the next compaction clusters the day with the late rows."""
    _commits(embedded.log_dir, 2, events=30)
    lake = Lake(embedded.log_dir)
    rows = count_events(embedded.log_dir)
    real = table_module.with_partition
    appended: list[int] = []

    def append_meanwhile(table: pa.Table) -> pa.Table:
        if not appended:  # the first sorted batch is on its way to the writer: the version is read
            done = subprocess.run([sys.executable, "-c", APPEND, str(embedded.log_dir)],
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            appended.append(1)
        return real(table)

    monkeypatch.setattr(table_module, "with_partition", append_meanwhile)
    assert lake.compact(today=CLOSED) == 0
    late = get_audit_logs(log_dir=embedded.log_dir, operation_name="late", output="arrow").num_rows
    assert appended and late >= 1 and count_events(embedded.log_dir) == rows + late
    files = lake.snapshot().files
    assert len(files) == 3 and lake.snapshot().position(CLUSTERED + files[0].date) is None
    monkeypatch.setattr(table_module, "with_partition", real)
    assert lake.compact_all(today=CLOSED) == 3
    assert len(_rows(embedded.log_dir)) == rows + late == sum(_rows(embedded.log_dir).values())
    assert verify(embedded.log_dir).ok


def test_a_rewrite_whose_rows_do_not_match_the_statistics_commits_nothing(
    embedded: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows read other than the version's statistics say (here: one batch lost) raise before any commit."""
    _commits(embedded.log_dir, 2, events=30)
    lake = Lake(embedded.log_dir)
    version, before = lake.snapshot().version, _rows(embedded.log_dir)
    total = sum(before.values())
    monkeypatch.setattr(table_module, "CLUSTER_BATCH_ROWS", 16)
    real = Lake.batches
    read: list[int] = []

    def lose_second(self: Lake, file: Any, columns: Any = None, batch_size: int = 65_536) -> Any:
        for batch in real(self, file, columns, batch_size):
            read.append(batch_size)
            if read.count(16) != 2:
                yield batch

    monkeypatch.setattr(Lake, "batches", lose_second)
    with pytest.raises(LakeError, match=f"held {total - 16} events in its files, not the {total} its statistics say"):
        lake.compact(today=CLOSED)
    assert lake.snapshot().version == version + 2  # the lease taken and released, nothing else
    assert _rows(embedded.log_dir) == before
    assert not (lake.root / SPILL_DIR).exists()


def test_two_rewrites_of_one_day_from_one_version_store_every_row_once(embedded: Harness) -> None:
    """A rewrite that outlived its maintenance lease races the next holder's: delta-rs refuses the second commit
    (unlike two optimizations), so the rows are never stored twice."""
    _commits(embedded.log_dir, 2, events=20)
    first, second = Lake(embedded.log_dir), Lake(embedded.log_dir)
    read_by_first, read_by_second = first._fresh(), second._fresh()  # both read the same version
    date = first.snapshot().files[0].date
    before = _rows(embedded.log_dir)
    assert first._cluster(read_by_first, date) == 2
    with pytest.raises(CommitFailedError):
        second._cluster(read_by_second, date)
    assert _rows(embedded.log_dir) == before and len(first.snapshot().files) == 1
    assert not (first.root / SPILL_DIR).exists()


def test_a_rewrite_longer_than_its_lease_keeps_it_renewed(embedded: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """A day's rewrite that outlasts the maintenance lease (2 s here, the rewrite ~5 s) keeps it: its holder renews it
    meanwhile, so another instance finds it held (what ``_take_lease`` checks) until the rewrite releases it, and every
    row is stored once."""
    _commits(embedded.log_dir, 2, events=20)
    before = _rows(embedded.log_dir)
    monkeypatch.setenv(LEASE_SECONDS_ENV, "2")
    monkeypatch.setattr(table_module, "CLUSTER_BATCH_ROWS", 16)
    real = Lake.batches

    def slow(self: Lake, file: Any, columns: Any = None, batch_size: int = 65_536) -> Any:
        for batch in real(self, file, columns, batch_size):
            if batch_size == 16:  # the rewrite's reading, not the schema's
                time.sleep(0.4)
            yield batch

    monkeypatch.setattr(Lake, "batches", slow)
    lake = Lake(embedded.log_dir)
    merged: list[int] = []
    rewrite = threading.Thread(target=lambda: merged.append(lake.compact(today=CLOSED)))
    started = time.time()
    rewrite.start()
    probes: list[tuple[float, int]] = []  # (when, the lease's expiry then) as another instance reads them
    while rewrite.is_alive():
        time.sleep(0.2)
        table = Lake(embedded.log_dir).latest()
        assert table is not None
        probes.append((time.time(), table.transaction_version(MAINTENANCE_LEASE) or 0))
    rewrite.join()
    assert merged == [2] and time.time() - started > 4  # the rewrite outlasted two leases
    held = [when for when, until in probes if until > when]
    free = [when for when, until in probes if until <= when]
    assert held and max(held) - started > 4  # still held after two leases' time: renewed
    assert all(when > max(held) for when in free)  # free only once released, at the end
    assert len({until for _, until in probes}) > 2  # renewed several times
    assert _rows(embedded.log_dir) == before
    table = Lake(embedded.log_dir).latest()
    assert table is not None and (table.transaction_version(MAINTENANCE_LEASE) or 0) <= time.time()  # released
