"""Fault campaign (issue 10): real faults, then a count of what was acknowledged, stored, lost, duplicated.

Each case ends with nothing duplicated and every acknowledged event stored, or with the loss
named (verify's findings, dead letters): zero events lost without a finding. The table is
printed at the end of the run (tests/support/faults.py, conftest.pytest_terminal_summary).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from support.faults import OUTCOMES, Outcome

from conftest import KAFKA_SCRIPT, Harness, unique_topic
from secureml.audit import AuditDeliveryError, AuditError, AuditTrail, get_audit_logs, verify
from secureml.lake.table import LEASE_SECONDS_ENV, MAINTENANCE_LEASE, Lake
from secureml.materializer import materialize
from secureml.stream.sources import dead_letters


def _free_port_pair() -> int:
    while True:
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
        with socket.socket() as b:
            try:
                b.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue


class Broker:
    """A broker of this module's own (scripts/kafka-local on free ports), which the cases SIGKILL."""

    def __init__(self, data: Path) -> None:
        self.env = {**os.environ, "KAFKA_LOCAL_PORT": str(_free_port_pair()), "KAFKA_LOCAL_DATA": str(data)}
        self.data = data
        self.bootstrap = ""

    def start(self) -> None:
        done = subprocess.run([str(KAFKA_SCRIPT), "start"], capture_output=True, text=True, env=self.env, timeout=600)
        assert done.returncode == 0, f"scripts/kafka-local start failed:\n{done.stderr[-3000:]}"
        self.bootstrap = done.stdout.strip().splitlines()[-1]

    def sigkill(self) -> None:
        """SIGKILL the broker: no clean shutdown, whatever it had not flushed is its problem."""
        pid = int((self.data / "kafka.pid").read_text().strip())
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        raise AssertionError(f"broker {pid} survived SIGKILL")

    def stop(self) -> None:
        subprocess.run([str(KAFKA_SCRIPT), "stop"], capture_output=True, env=self.env, timeout=120)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    own = Broker(tmp_path_factory.mktemp("fault-broker") / "kafka")
    own.start()
    yield own
    from secureml.audit.transports import factory

    factory._close_all()  # the trails' producers, while their broker still answers (or they retry until exit)
    own.stop()


def _lake_counts(log_dir: Path, operations: set[str] | None = None) -> tuple[int, int, set[str]]:
    """Rows, distinct events and the event ids the lake holds (for some operations)."""
    table = get_audit_logs(log_dir=log_dir, output="arrow")
    if operations is not None:
        keep = [op in operations for op in table["operation_id"].to_pylist()]
        table = table.filter(pa.array(keep))
    ids = table["event_id"].to_pylist()
    return len(ids), len(set(ids)), set(ids)


def _record(case: str, acknowledged: set[str], log_dir: Path, operations: set[str], detected: str) -> Outcome:
    rows, distinct, ids = _lake_counts(log_dir, operations)
    outcome = Outcome(case, len(acknowledged), distinct, len(acknowledged - ids), rows - distinct, detected)
    OUTCOMES.append(outcome)
    return outcome


def _event_ids_of(trail: AuditTrail, seqs: range) -> set[str]:
    """The event ids of some of a trail's events (event id = operation id, ':', seq)."""
    return {f"{trail.operation_id}:{seq}" for seq in seqs}


def test_broker_sigkilled_and_restarted_while_logging(broker: Broker, tmp_path: Path) -> None:
    """Events logged before, during and after a broker SIGKILL: close() confirms them all, once each."""
    harness = Harness("kafka", tmp_path / "audit_logs", broker.bootstrap, unique_topic("fault"))
    trail = AuditTrail("fault-log", **harness.options())
    for i in range(2000):
        trail.log_model_inference("m", f"before-{i}", i)
    broker.sigkill()
    for i in range(2000):
        trail.log_model_inference("m", f"during-{i}", i)  # queued locally while the broker is dead
    broker.start()
    for i in range(2000):
        trail.log_model_inference("m", f"after-{i}", i)
    report = trail.close(timeout=180)
    assert report.ok and report.delivered == 6002
    materialize(harness.log_dir, bootstrap_servers=broker.bootstrap, topic=harness.topic, once=True)
    acknowledged = _event_ids_of(trail, range(report.delivered))
    outcome = _record("broker SIGKILL + restart while logging", acknowledged, harness.log_dir,
                      {trail.operation_id}, "-")
    assert outcome.lost == 0 and outcome.duplicated == 0 and outcome.stored == 6002
    assert verify(harness.log_dir).ok


def _materializer(harness: Harness, log: Path, group: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "secureml.audit.cli", "materialize", "--log-dir", str(harness.log_dir),
             "--bootstrap-servers", harness.bootstrap, "--topic", harness.topic, "--group", group],
            stdout=out, stderr=out,
        )


def test_broker_sigkilled_and_restarted_while_materializing(broker: Broker, tmp_path: Path) -> None:
    """The materializer loses its broker mid-stream; once it is back (restarted if it gave up), all once."""
    harness = Harness("kafka", tmp_path / "audit_logs", broker.bootstrap, unique_topic("fault"))
    trails = []
    for op in range(20):
        with AuditTrail(f"fault-mat-{op % 3}", **harness.options()) as trail:
            for i in range(1000):
                trail.log_model_inference("m", f"i-{i}", i)
        trails.append(trail)
    acknowledged = set().union(*(_event_ids_of(t, range(t.close().delivered)) for t in trails))
    log = tmp_path / "materializer.log"
    group = f"fault-{harness.topic}"
    process = _materializer(harness, log, group)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (harness.log_dir / "lake" / "events" / "_delta_log").is_dir():
            time.sleep(0.05)
        broker.sigkill()
        time.sleep(3)
        broker.start()
        restarts = 0
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if _lake_counts(harness.log_dir)[1] >= len(acknowledged):
                break
            if process.poll() is not None:  # it gave up on the broker: an operator restarts it
                restarts += 1
                assert restarts <= 3, log.read_text()[-3000:]
                process = _materializer(harness, log, group)
            time.sleep(0.5)
        time.sleep(2)  # a late duplicate would arrive now
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(120)
    operations = {t.operation_id for t in trails}
    outcome = _record("broker SIGKILL + restart while materializing", acknowledged, harness.log_dir, operations,
                      "-" if not restarts else f"materializer restarted {restarts}x")
    assert outcome.lost == 0 and outcome.duplicated == 0, log.read_text()[-3000:]
    assert verify(harness.log_dir).ok


def test_materializer_sigkilled_during_compaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kill -9 at several moments of a compaction: readers count every event once, verify passes.

    The maintenance lease is cut to 4 s here (a killed holder blocks compaction that long), so
    that each attempt finds the lease free again.
    """
    log_dir = tmp_path / "audit_logs"
    trails = []
    with monkeypatch.context() as setup:
        setup.setattr(Lake, "compact", lambda _self, **_kw: 0)  # set-up only: 20 files, none merged yet
        for round_ in range(20):  # 20 commits: today's partition is due for compaction (16 files)
            with AuditTrail(f"fault-compact-{round_ % 4}", log_dir=log_dir) as trail:
                for i in range(150):
                    trail.log_model_inference("m", f"i-{i}", i)
            trails.append(trail)
            materialize(log_dir, once=True)
    acknowledged = set().union(*(_event_ids_of(t, range(t.close().delivered)) for t in trails))
    env = {**os.environ, LEASE_SECONDS_ENV: "4"}
    lake = Lake(log_dir)
    kills = 0
    for delay in (0.0, 0.15, 0.4):
        process = subprocess.Popen([sys.executable, "-c", (
            "import sys; from secureml.lake.table import Lake; print(Lake(sys.argv[1]).compact_all(), flush=True)"),
            str(log_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            table = lake.latest()
            if table is not None and (table.transaction_version(MAINTENANCE_LEASE) or 0) > time.time():
                break  # the lease is taken: the compaction is under way
            time.sleep(0.01)
        time.sleep(delay)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait(60)
        rows, distinct, _ = _lake_counts(log_dir)
        assert rows == distinct == len(acknowledged)  # between kills, every reader sees each event once
        time.sleep(4.5)  # the killed holder's lease expires
    assert kills >= 1, "every compaction finished before the kill: nothing was tested"
    merged = subprocess.run([sys.executable, "-c", (
        "import sys; from secureml.lake.table import Lake; print(Lake(sys.argv[1]).compact_all())"), str(log_dir)],
        capture_output=True, text=True, env=env, timeout=300, check=True)
    files = len(Lake(log_dir).snapshot().files)
    outcome = _record("materializer SIGKILL during compaction", acknowledged, log_dir,
                      {t.operation_id for t in trails}, f"- ({kills} kills, then {merged.stdout.strip()} merged)")
    assert outcome.lost == 0 and outcome.duplicated == 0 and files < 16
    assert verify(log_dir).ok


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs for log_dir (mounted by the test: CI runs as root), unmounted at the end."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs", str(mount_point)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"cannot mount a tmpfs for the disk-full case (needs root): {done.stderr}"
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, check=False)


def test_disk_full_on_log_dir(small_disk: Path) -> None:
    """Logging fills the disk: a clear error, nothing confirmed is lost; once space returns, all goes on."""
    log_dir = small_disk / "audit_logs"
    trail = AuditTrail("fault-disk", log_dir=log_dir)
    acknowledged: set[str] = set()
    seq = 1  # audit_started is seq 0
    error = None
    for batch in range(1000):
        for i in range(100):
            trail.log_model_inference("m", f"b{batch}-i{i}-" + "x" * 200, i)
        seq += 100
        report = trail.flush()
        if not report.ok:
            error = report
            break
        acknowledged = _event_ids_of(trail, range(seq))
    assert error is not None and error.failed > 0, "the 3 MiB disk never filled up"
    with pytest.raises(AuditDeliveryError, match="free disk space"):
        trail.close()
    with pytest.raises(AuditError):  # no room for the lake either: an error, not a corrupt lake
        materialize(log_dir, once=True)
    subprocess.run(["mount", "-o", "remount,size=256m", str(small_disk)], check=True)  # space returns
    with AuditTrail("fault-disk-after", log_dir=log_dir) as after:
        for i in range(100):
            after.log_model_inference("m", f"after-{i}", i)
    materialize(log_dir, once=True)
    acknowledged |= _event_ids_of(after, range(102))
    result = verify(log_dir)
    gaps = [f for f in result.all_findings() if f.operation_id == trail.operation_id]
    outcome = _record("disk full on log_dir, then space returns", acknowledged, log_dir,
                      {trail.operation_id, after.operation_id},
                      f"flush: {error.failed} failed; verify: {', '.join(sorted({f.kind for f in gaps})) or '-'}")
    assert outcome.lost == 0 and outcome.duplicated == 0
    assert gaps, "the events that never reached the disk are not named by verify"
    assert result.operation(after.operation_id) is not None and not result.operation(after.operation_id).findings


def test_corrupted_segment_bytes(tmp_path: Path) -> None:
    """Bytes flipped inside an unmaterialised segment: the damaged events are dead letters, verify names the gap."""
    log_dir = tmp_path / "audit_logs"
    with AuditTrail("fault-corrupt", log_dir=log_dir) as trail:
        for i in range(2000):
            trail.log_model_inference("m", f"i-{i}", i)
    acknowledged = _event_ids_of(trail, range(2002))
    (segment,) = sorted((log_dir / "log").glob("*.seg"))
    data = bytearray(segment.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
    segment.write_bytes(bytes(data))
    materialize(log_dir, once=True)
    letters = dead_letters(log_dir)
    result = verify(log_dir)
    named = [f for f in result.all_findings() if f.operation_id == trail.operation_id]
    outcome = _record("corrupted segment bytes", acknowledged, log_dir, {trail.operation_id},
                      f"{len(letters)} dead letter(s); verify: {', '.join(sorted({f.kind for f in named}))}")
    assert outcome.duplicated == 0 and 0 < outcome.lost <= 3
    assert letters and named and not result.ok
    assert {s for f in named for s in f.seqs} >= {int(e.rsplit(":", 1)[1]) for e in acknowledged - _lake_counts(
        log_dir, {trail.operation_id})[2]}, "verify does not name every lost seq"


def test_two_materializers_on_one_lake(tmp_path: Path) -> None:
    """Two `materialize --once` processes at once on one embedded log: each event stored once."""
    log_dir = tmp_path / "audit_logs"
    trails = []
    for op in range(30):
        with AuditTrail(f"fault-two-{op % 5}", log_dir=log_dir) as trail:
            for i in range(500):
                trail.log_model_inference("m", f"i-{i}", i)
        trails.append(trail)
    acknowledged = set().union(*(_event_ids_of(t, range(t.close().delivered)) for t in trails))
    processes = [subprocess.Popen([sys.executable, "-m", "secureml.audit.cli", "materialize", "--once", "--log-dir",
                                   str(log_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in processes]
    assert all(p.returncode == 0 for p in processes), outputs
    outcome = _record("two materializers on one lake", acknowledged, log_dir, {t.operation_id for t in trails}, "-")
    assert outcome.lost == 0 and outcome.duplicated == 0
    assert verify(log_dir).ok
