"""The materializer's pending batch when a source goes back or jumps ahead (pure logic, a real lake).

A Kafka rebalance can hand an instance a partition it already holds uncommitted messages of,
telling it to start again from the lake's position; another instance may meanwhile have stored
some of them. Whatever the order, each message is stored once. (With a real broker:
tests/test_kafka_pipeline.py::test_a_rebalance_while_a_batch_is_pending_stores_nothing_twice.)
"""

from __future__ import annotations

import gc
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest

from secureml.audit import AuditTrail
from secureml.audit.exceptions import LakeError
from secureml.audit.testing import capture_events
from secureml.lake.rows import events_table
from secureml.lake.table import COMPACT_SMALL_FILES, PREVIOUS_FORMAT_MANIFEST, Lake
from secureml.materializer.compaction import compact_in_child
from secureml.materializer.runner import (
    SERVICE_COMMIT_INTERVAL,
    YOUNG_OBJECTS,
    Beside,
    Materializer,
    fewer_collections,
)
from secureml.stream.sources import Batch, Item, Source

SOURCE = "audit-events/0"


def _events(count: int) -> list[bytes]:
    with capture_events() as captured:
        trail = AuditTrail("positions", transport=captured.transport)
        for i in range(count - 2):
            trail.log_model_inference("m", f"req-{i}", i, 0.5)
        trail.close()
    return [value for _key, value in captured.transport.stored]


class ScriptedSource(Source):
    """Hands out the given (start, end) spans of a message list, one per poll; then is caught up."""

    def __init__(self, values: list[bytes], spans: list[tuple[int, int]]) -> None:
        self.values = values
        self.spans = list(spans)

    def start(self, positions: Callable[[list[str]], dict[str, int]]) -> None:
        pass

    def poll(self, max_items: int, timeout: float) -> list[Batch]:
        if not self.spans:
            return []
        start, end = self.spans.pop(0)
        versions: list[int | None] = [1] * (end - start)
        return [Batch(SOURCE, end, list(range(start, end)), versions, self.values[start:end], [None] * (end - start))]

    def caught_up(self) -> bool:
        return not self.spans

    def dead_letter(self, item: Item, reason: str) -> None:
        raise AssertionError(f"unexpected dead letter at {item.position}: {reason}")

    def flush_dead_letters(self) -> None:
        pass

    def committed(self, positions: dict[str, int]) -> None:
        pass

    def lag(self) -> int | None:
        return None

    def close(self) -> None:
        pass


def _stored(lake: Lake) -> list[int]:
    table = lake.latest()
    assert table is not None
    return sorted(pa.table(table.to_pyarrow_table(columns=["source_offset"]))["source_offset"].to_pylist())


def test_a_source_that_goes_back_replaces_the_pending_messages(tmp_path: Path) -> None:
    """0..29 pending, then read again from 10 (a rebalance): 0..39 stored once each."""
    values = _events(40)
    lake = Lake(tmp_path)
    source = ScriptedSource(values, [(0, 20), (20, 30), (10, 40)])
    Materializer(lake, source, commit_interval=3600, background_compaction=False).run(once=True)
    assert _stored(lake) == list(range(40))
    assert lake.snapshot().position(SOURCE) == 40


def test_a_source_that_goes_back_behind_its_first_pending_message(tmp_path: Path) -> None:
    """Pending 10..19 (the lake held 0..9 when read), then the source restarts at 5: stored 0..24 once."""
    values = _events(25)
    lake = Lake(tmp_path)
    lake.commit({SOURCE: events_table([SOURCE] * 10, list(range(10)), [1] * 10, values[:10])}, {SOURCE: (0, 10)})
    source = ScriptedSource(values, [(10, 20), (5, 25)])
    Materializer(lake, source, commit_interval=3600, background_compaction=False).run(once=True)
    assert _stored(lake) == list(range(25))


def test_a_source_that_jumps_ahead_keeps_what_another_instance_stored_once(tmp_path: Path) -> None:
    """Pending 0..9; another instance stores 0..19; the source jumps to 20: 0..29 stored once each."""
    values = _events(30)
    lake = Lake(tmp_path)
    other = Lake(tmp_path)
    source = ScriptedSource(values, [(0, 10), (20, 30)])
    materializer = Materializer(lake, source, commit_interval=3600, background_compaction=False)
    other.commit({SOURCE: events_table([SOURCE] * 20, list(range(20)), [1] * 20, values[:20])}, {SOURCE: (0, 20)})
    materializer.run(once=True)
    assert _stored(lake) == list(range(30))


class PipelinedSource(ScriptedSource):
    """A scripted source that lets batches commit on another thread, and notes who acknowledges them."""

    concurrent_commits = True

    def __init__(self, values: list[bytes], spans: list[tuple[int, int]]) -> None:
        super().__init__(values, spans)
        self.acknowledged: list[tuple[dict[str, int], str]] = []

    def committed(self, positions: dict[str, int]) -> None:
        self.acknowledged.append((dict(positions), threading.current_thread().name))


def test_pipelined_commits_store_once_and_are_acknowledged_from_the_reading_thread(tmp_path: Path) -> None:
    """Commits on the committer thread (one batch per poll) store each message once, in order; the
    source hears of them on the thread that polls it (a Kafka consumer's commit() from another thread
    waits for its consume(): a deadlock), including a batch read again after a rebalance."""
    values = _events(60)
    lake = Lake(tmp_path)
    source = PipelinedSource(values, [(0, 20), (20, 40), (10, 50), (50, 60)])
    Materializer(lake, source, commit_interval=0, background_compaction=False).run(once=True)
    assert _stored(lake) == list(range(60))
    assert lake.snapshot().position(SOURCE) == 60
    assert source.acknowledged and {thread for _positions, thread in source.acknowledged} == {"MainThread"}
    assert source.acknowledged[-1][0] == {SOURCE: 60}


def test_a_failed_pipelined_commit_stops_the_run_with_its_error(tmp_path: Path) -> None:
    """A commit that fails on the committer thread is raised by run(); the source hears of nothing past it."""
    values = _events(20)
    lake = Lake(tmp_path)
    source = PipelinedSource(values, [(0, 10), (10, 20)])

    def refuse(*_args: object) -> int:
        raise LakeError("disk full (test)")

    lake.commit = refuse  # type: ignore[method-assign]
    with pytest.raises(LakeError, match="disk full"):
        Materializer(lake, source, commit_interval=0, background_compaction=False).run(once=True)
    assert source.acknowledged == []


class SlowSource(ScriptedSource):
    """A scripted source whose every poll takes longer than a service's commit interval."""

    def poll(self, max_items: int, timeout: float) -> list[Batch]:
        time.sleep(SERVICE_COMMIT_INTERVAL + 0.05)
        return super().poll(max_items, timeout)


def test_a_run_once_commits_by_size_and_when_caught_up_not_by_time(tmp_path: Path) -> None:
    """Without a commit interval, a run once commits every batch_events events and at its end, however slow."""
    values = _events(30)
    lake = Lake(tmp_path)
    source = SlowSource(values, [(0, 10), (10, 20), (20, 25), (25, 30)])
    stats = Materializer(lake, source, batch_events=20, background_compaction=False).run(once=True)
    assert stats.commits == 2
    assert _stored(lake) == list(range(30))


class ThreadRecorder:
    """A checkpointer that notes the thread of every call, and stops the run after the first checkpoint."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.calls: list[tuple[str, str]] = []

    def after_commit(self, lake: Lake) -> None:
        self.calls.append(("after_commit", threading.current_thread().name))
        if lake.snapshot().rows:
            self.stop.set()

    def finish(self, lake: Lake) -> None:
        self.calls.append(("finish", threading.current_thread().name))


def test_a_service_checkpoints_on_its_maintenance_thread_not_on_the_commit_path(tmp_path: Path) -> None:
    """A service's checkpoints (seconds of hashing) run beside the commits, so the lake stays fresh meanwhile."""
    values = _events(30)
    lake = Lake(tmp_path)
    stop = threading.Event()
    recorder = ThreadRecorder(stop)
    source = PipelinedSource(values, [(0, 10), (10, 30)])
    Materializer(lake, source, checkpointer=recorder, commit_interval=0).run(stop=stop)
    assert _stored(lake) == list(range(30))
    assert {thread for call, thread in recorder.calls if call == "after_commit"} == {"compactor"}
    assert recorder.calls[-1] == ("finish", "checkpoint")  # once everything is stored, beside the closing steps


class PacedSource(PipelinedSource):
    """A pipelined scripted source that hands out one span every 0.1 s, like a steady stream."""

    def poll(self, max_items: int, timeout: float) -> list[Batch]:
        time.sleep(0.1)
        return super().poll(max_items, timeout)


def _operations(lake: Lake) -> list[tuple[str, int]]:
    """(operation, files added) of every commit of the lake's table, oldest first."""
    log = Path(lake.uri) / "_delta_log"
    commits = []
    for path in sorted(log.glob("*.json")):
        actions = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        info = next(a["commitInfo"] for a in actions if "commitInfo" in a)
        commits.append((str(info.get("operation")), sum(1 for a in actions if "add" in a)))
    return commits


def test_a_busy_service_compacts_once_its_commits_pause(tmp_path: Path) -> None:
    """While commits keep coming a service leaves today's small files alone; the first quiet second compacts them."""
    values = _events(COMPACT_SMALL_FILES + 44)
    lake = Lake(tmp_path)
    stop = threading.Event()
    source = PacedSource(values, [(i, i + 1) for i in range(len(values))])  # ~6 s of commits
    materializer = Materializer(lake, source, commit_interval=0, compaction_interval=3600)
    runner = threading.Thread(target=materializer.run, kwargs={"stop": stop})
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while not materializer.stats.compacted_files:
            assert time.monotonic() < deadline and runner.is_alive(), "the idle service never compacted"
            time.sleep(0.1)
    finally:
        stop.set()
        runner.join(60)
    operations = _operations(lake)
    first_optimize = next(i for i, (operation, _added) in enumerate(operations) if operation == "OPTIMIZE")
    appends = [i for i, (operation, added) in enumerate(operations) if operation == "WRITE" and added]
    assert len(appends) > COMPACT_SMALL_FILES and appends[-1] < first_optimize
    assert _stored(lake) == list(range(len(values)))


def test_a_compaction_in_a_child_process_merges_the_small_files_and_reports_them(tmp_path: Path) -> None:
    """compact_in_child merges today's small files in another process and returns how many it replaced."""
    values = _events(COMPACT_SMALL_FILES)
    lake = Lake(tmp_path)
    for i in range(COMPACT_SMALL_FILES):
        lake.commit({SOURCE: events_table([SOURCE], [i], [1], values[i : i + 1])}, {SOURCE: (i, i + 1)})
    assert compact_in_child(lake) == COMPACT_SMALL_FILES
    assert len(lake.snapshot().files) == 1 and _stored(lake) == list(range(COMPACT_SMALL_FILES))


def test_a_failed_compaction_in_a_child_process_raises_a_lake_error(tmp_path: Path) -> None:
    """A child that cannot compact (here: a lake in the previous format) raises LakeError with its reason."""
    lake = Lake(tmp_path)
    lake.root.mkdir(parents=True)
    (lake.root / PREVIOUS_FORMAT_MANIFEST).write_text("{}")
    with pytest.raises(LakeError, match="compaction in a child process failed.*previous lake format"):
        compact_in_child(lake)


def test_a_run_once_with_a_commit_thread_writes_while_it_reads(tmp_path: Path) -> None:
    """With a commit thread, a run once commits an eighth of batch_events as soon as that thread is idle, so that
    only the last batch is written after the last read; each message is still stored once, in order."""
    values = _events(300)
    lake = Lake(tmp_path)
    source = PipelinedSource(values, [(0, 150), (150, 300)])
    stats = Materializer(lake, source, batch_events=1000, background_compaction=False).run(once=True)
    assert stats.commits == 2  # (without the commit thread: one commit, when caught up)
    assert _stored(lake) == list(range(300))
    assert source.acknowledged[-1][0] == {SOURCE: 300}


class FailingFinish:
    """A checkpointer whose last checkpoint fails."""

    def after_commit(self, lake: Lake) -> None:
        pass

    def finish(self, lake: Lake) -> None:
        raise OSError("checkpoint directory not writable (test)")


def test_a_failed_last_checkpoint_is_raised_by_the_run_after_everything_is_stored(tmp_path: Path) -> None:
    """The last checkpoint is signed on a thread of its own while the run closes: its failure is still the run's."""
    values = _events(20)
    lake = Lake(tmp_path)
    source = PipelinedSource(values, [(0, 10), (10, 20)])
    with pytest.raises(OSError, match="not writable"):
        Materializer(lake, source, checkpointer=FailingFinish(), background_compaction=False).run(once=True)
    assert _stored(lake) == list(range(20))


class ThresholdSource(ScriptedSource):
    """A scripted source that notes the collector's young-generation threshold at every poll."""

    def __init__(self, values: list[bytes], spans: list[tuple[int, int]]) -> None:
        super().__init__(values, spans)
        self.thresholds: list[int] = []

    def poll(self, max_items: int, timeout: float) -> list[Batch]:
        self.thresholds.append(gc.get_threshold()[0])
        return super().poll(max_items, timeout)


def test_a_run_collects_young_objects_less_often_and_puts_the_threshold_back(tmp_path: Path) -> None:
    """While materializers run, the young generation holds YOUNG_OBJECTS (a tracked object per Kafka message made
    the collector run every 700 messages); the threshold the process had comes back when the last run ends."""
    before = gc.get_threshold()
    gc.set_threshold(777, before[1], before[2])
    try:
        values = _events(20)
        outer = ThresholdSource(values, [(0, 10), (10, 20)])
        with fewer_collections():  # another run in the process, still under way when this one ends
            Materializer(Lake(tmp_path / "a"), outer, background_compaction=False).run(once=True)
            assert gc.get_threshold()[0] == YOUNG_OBJECTS
        assert set(outer.thresholds) == {YOUNG_OBJECTS}
        assert gc.get_threshold()[0] == 777
        with pytest.raises(LakeError):
            failing = ScriptedSource(values, [(0, 10)])
            lake = Lake(tmp_path / "b")
            lake.commit = lambda *_args: (_ for _ in ()).throw(LakeError("disk full (test)"))  # type: ignore[method-assign]
            Materializer(lake, failing, background_compaction=False).run(once=True)
        assert gc.get_threshold()[0] == 777  # put back after a failed run too
    finally:
        gc.set_threshold(*before)


class Recorder:
    """A checkpointer that notes the thread of every call (and fails its ``after_commit`` when told to)."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls: list[tuple[str, str]] = []

    def after_commit(self, lake: Lake) -> None:
        self.calls.append(("after_commit", threading.current_thread().name))
        if self.fail:
            raise OSError("checkpoint directory not writable (test)")

    def finish(self, lake: Lake) -> None:
        self.calls.append(("finish", threading.current_thread().name))


class SlowPipelinedSource(PipelinedSource):
    """A pipelined source whose polls take long enough for the commit before to be done (and its checkpoint asked)."""

    def poll(self, max_items: int, timeout: float) -> list[Batch]:
        time.sleep(0.3)
        return super().poll(max_items, timeout)


def test_a_run_once_with_a_commit_thread_checkpoints_beside_its_commits(tmp_path: Path) -> None:
    """A run once's checkpoints after commits run on a thread of their own (its last one then covers only what
    came since); the last checkpoint comes after them all. A failure there is the run's error."""
    values = _events(60)
    recorder = Recorder()
    source = SlowPipelinedSource(values, [(0, 20), (20, 40), (40, 60)])
    Materializer(Lake(tmp_path / "a"), source, checkpointer=recorder, batch_events=8,
                 background_compaction=False).run(once=True)
    assert {thread for call, thread in recorder.calls if call == "after_commit"} == {"checkpoints"}
    assert recorder.calls[-1] == ("finish", "checkpoint")
    failing = Recorder(fail=True)
    with pytest.raises(OSError, match="not writable"):
        Materializer(Lake(tmp_path / "b"), SlowPipelinedSource(values, [(0, 20), (20, 40)]), checkpointer=failing,
                     batch_events=8, background_compaction=False).run(once=True)
    assert ("finish", "checkpoint") not in failing.calls  # nothing signed after a failed checkpoint


def test_checkpoints_beside_commits_stop_when_the_run_is_caught_up(tmp_path: Path) -> None:
    """Once a run is caught up, its last checkpoint covers the rest: a commit after that asks for none beside it
    (which the last one would wait for)."""
    recorder = Recorder()
    beside = Beside(recorder, Lake(tmp_path))
    beside.ask()
    deadline = time.monotonic() + 10
    while not recorder.calls and time.monotonic() < deadline:
        time.sleep(0.01)
    beside.stop_asking()
    beside.ask()
    beside.close()
    assert recorder.calls == [("after_commit", "checkpoints")]
