"""Contract of scripts/kafka-local: start/stop/status of a local single-node Kafka (KRaft).

The broker under test runs on its own free ports with its own data dir, so a broker that CI
already started on 9092 (from the default data dir) is never touched. KAFKA_LOCAL_HOME keeps
its default, so the Kafka jars cached by CI's own `scripts/kafka-local start` are reused.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from support.ports import free_port_pair

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "kafka-local"
START_TIMEOUT_S = 300  # first use may fetch the jars from Maven Central


class LocalKafka:
    """Runs scripts/kafka-local against one port and data dir."""

    def __init__(self, port: int, data_dir: Path) -> None:
        self.port = port
        self.data_dir = data_dir
        self.bootstrap = f"127.0.0.1:{port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_LOCAL_")}
        if "KAFKA_LOCAL_HOME" in os.environ:  # honour a relocated jar cache
            self.env["KAFKA_LOCAL_HOME"] = os.environ["KAFKA_LOCAL_HOME"]
        self.env.update(KAFKA_LOCAL_PORT=str(port), KAFKA_LOCAL_DATA=str(data_dir))

    def run(self, *args: str, timeout: float = START_TIMEOUT_S) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(SCRIPT), *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def start(self) -> subprocess.CompletedProcess:
        proc = self.run("start")
        assert proc.returncode == 0, f"start failed:\n{proc.stdout}\n{proc.stderr}"
        return proc

    def pid(self) -> int | None:
        try:
            return int((self.data_dir / "kafka.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, FileNotFoundError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _is_our_broker(pid: int, data_dir: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return "kafka.Kafka" in cmdline and str(data_dir) in cmdline


@pytest.fixture(scope="module")
def local_broker(tmp_path_factory: pytest.TempPathFactory):
    """One broker for the whole module, always stopped at the end."""
    broker = LocalKafka(free_port_pair(), tmp_path_factory.mktemp("kafka-local") / "data")
    try:
        yield broker
    finally:
        pid = broker.pid()
        try:
            broker.run("stop", timeout=90)
        finally:
            if pid is not None and _alive(pid) and _is_our_broker(pid, broker.data_dir):
                os.kill(pid, signal.SIGKILL)  # last resort, only the broker this module started


def _metadata_broker_count(bootstrap: str) -> int:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    return len(admin.list_topics(timeout=15).brokers)


def test_start_prints_bootstrap_address_last_and_broker_answers_metadata(local_broker: LocalKafka):
    """start prints 127.0.0.1:PORT as the last stdout line and the broker serves metadata."""
    proc = local_broker.start()
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == local_broker.bootstrap
    assert lines == [local_broker.bootstrap], "progress must go to stderr, not stdout"
    assert _metadata_broker_count(lines[-1]) == 1
    pid = local_broker.pid()
    assert pid is not None and _alive(pid)
    assert (local_broker.data_dir / "logs" / "server.log").stat().st_size > 0, "broker log goes to the data dir"


def test_start_while_running_reuses_the_same_process(local_broker: LocalKafka):
    """start on a running broker prints the same address quickly, with no second process."""
    local_broker.start()
    pid_before = local_broker.pid()
    t0 = time.monotonic()
    proc = local_broker.start()
    elapsed = time.monotonic() - t0
    assert proc.stdout.strip().splitlines()[-1] == local_broker.bootstrap
    assert local_broker.pid() == pid_before
    assert elapsed < 15, f"second start took {elapsed:.1f}s"


def test_status_exits_0_and_names_the_address_while_running(local_broker: LocalKafka):
    """status exits 0 and prints the bootstrap address while the broker runs."""
    local_broker.start()
    proc = local_broker.run("status", timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert local_broker.bootstrap in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == local_broker.bootstrap


def test_produced_messages_survive_stop_and_start(local_broker: LocalKafka):
    """messages acknowledged with acks=all are still there after stop + start (same cluster)."""
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    local_broker.start()
    topic = f"persist-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": local_broker.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(30)
    producer = Producer(
        {"bootstrap.servers": local_broker.bootstrap, "enable.idempotence": True, "acks": "all"}
    )
    errors: list = []
    sent = {f"event-{i}" for i in range(200)}
    for value in sorted(sent):
        producer.produce(topic, value=value.encode(), on_delivery=lambda e, m: e and errors.append(e))
    assert producer.flush(30) == 0 and not errors
    cluster_id_before = admin.list_topics(timeout=10).cluster_id

    stop = local_broker.run("stop", timeout=90)
    assert stop.returncode == 0, stop.stderr
    local_broker.start()

    admin = AdminClient({"bootstrap.servers": local_broker.bootstrap})
    assert admin.list_topics(timeout=15).cluster_id == cluster_id_before
    consumer = Consumer(
        {
            "bootstrap.servers": local_broker.bootstrap,
            "group.id": f"persist-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    received: set[str] = set()
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 60
        while received != sent and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and not msg.error():
                received.add(msg.value().decode())
    finally:
        consumer.close()
    assert received == sent


def test_stop_ends_the_process_and_status_then_exits_3(local_broker: LocalKafka):
    """stop ends the broker process and removes the pid file; status then exits 3; stop again exits 0."""
    local_broker.start()
    pid = local_broker.pid()
    assert pid is not None
    proc = local_broker.run("stop", timeout=90)
    assert proc.returncode == 0, proc.stderr
    assert not _alive(pid)
    assert not (local_broker.data_dir / "kafka.pid").exists()
    status = local_broker.run("status", timeout=60)
    assert status.returncode == 3, status.stdout + status.stderr
    assert "not running" in status.stdout
    again = local_broker.run("stop", timeout=60)
    assert again.returncode == 0
    assert "not running" in again.stderr


def test_secure_start_is_refused_on_a_plaintext_data_dir(local_broker: LocalKafka):
    """start --secure on a data dir formatted for a plaintext broker fails and starts nothing."""
    pid_before = local_broker.pid()
    proc = local_broker.run("start", "--secure", timeout=60)
    assert proc.returncode == 1
    assert "formatted for a plaintext broker, not sasl_ssl" in proc.stderr
    assert proc.stdout == ""
    assert local_broker.pid() == pid_before


def test_unknown_security_mode_and_start_flag_are_refused(tmp_path: Path):
    """KAFKA_LOCAL_SECURITY must be plaintext or sasl_ssl; start takes no flag but --secure."""
    broker = LocalKafka(free_port_pair(), tmp_path / "data")
    broker.env["KAFKA_LOCAL_SECURITY"] = "tls-please"
    bad_mode = broker.run("start", timeout=60)
    assert bad_mode.returncode == 1 and "bad KAFKA_LOCAL_SECURITY: tls-please" in bad_mode.stderr
    del broker.env["KAFKA_LOCAL_SECURITY"]
    bad_flag = broker.run("start", "--insecure", timeout=60)
    assert bad_flag.returncode == 2 and bad_flag.stdout == ""
    assert not (tmp_path / "data" / "kafka-local.env").exists(), "nothing was formatted"
