"""Shared fixtures: a real Kafka broker for the session, and one harness per transport.

The broker comes from SECUREML_AUDIT_BOOTSTRAP_SERVERS, else testcontainers when a Docker
engine answers, else ``scripts/kafka-local``. A Kafka test fails, never skips, when none can
be had. Every test starts with no SECUREML_AUDIT_* variable set, so the embedded default is
really the default; the Kafka harness passes the broker explicitly.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support.s3 import s3_endpoint, s3_lake  # noqa: F401 - fixtures: a local S3 endpoint, a bucket per test

REPO = Path(__file__).resolve().parents[1]
KAFKA_SCRIPT = REPO / "scripts" / "kafka-local"
_BROKER_ENV = os.environ.get("SECUREML_AUDIT_BOOTSTRAP_SERVERS", "")


def _docker_engine_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means no usable engine
        return False


_session_status = {"exit": 0}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the fault campaign's table (case, acknowledged, stored, lost, duplicated, detected)."""
    from support.faults import table

    lines = table()
    if lines:
        terminalreporter.section("fault campaign")
        for line in lines:
            terminalreporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remember the run's exit status for pytest_unconfigure."""
    _session_status["exit"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave with the run's status, skipping native teardown once everything Python-level is done.

    delta-rs and pyarrow can abort the interpreter while their thread pools are torn down at
    exit (delta-rs#2184, arrow#34314), which would turn a green run into status 134.
    """
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_session_status["exit"])


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap address of a real Kafka broker for the whole session."""
    if _BROKER_ENV:
        yield _BROKER_ENV
        return
    if _docker_engine_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    already_running = subprocess.run([str(KAFKA_SCRIPT), "status"], capture_output=True, check=False).returncode == 0
    started = subprocess.run(
        [str(KAFKA_SCRIPT), "start"], capture_output=True, text=True, timeout=900, check=False
    )
    if started.returncode != 0:
        pytest.fail(f"no Kafka broker: scripts/kafka-local start failed:\n{started.stderr[-3000:]}")
    yield started.stdout.strip().splitlines()[-1]
    if not already_running:  # stop only the broker this session started
        subprocess.run([str(KAFKA_SCRIPT), "stop"], capture_output=True, check=False)


def pytest_configure(config: pytest.Config) -> None:
    """Fixtures wider than one test (module, session) see the embedded default too (the broker is
    kept in _BROKER_ENV) and keep privacy keys under a temporary directory, never the home
    directory's; each test then starts afresh (_clean_environment)."""
    import tempfile

    for name in [n for n in os.environ if n.startswith("SECUREML_AUDIT_")]:
        del os.environ[name]
    os.environ["SECUREML_AUDIT_KEYSTORE_DIR"] = tempfile.mkdtemp(prefix="secureml-audit-keystore-")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every test starts without SECUREML_AUDIT_* variables (the embedded default); checkpoints
    are signed with a key, and privacy keys are kept, under pytest's temporary directory, never the home
    directory's."""
    for name in list(os.environ):
        if name.startswith("SECUREML_AUDIT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv(
        "SECUREML_AUDIT_SIGNING_KEY", str(tmp_path_factory.getbasetemp() / "signing-key" / "signing_key.pem")
    )
    # The privacy layer's key store and key-encryption key: a fresh one per test, never the home directory's.
    monkeypatch.setenv("SECUREML_AUDIT_KEYSTORE_DIR", str(tmp_path_factory.mktemp("keystore")))


@dataclass
class Harness:
    """One transport under test: how to configure trails and make their events queryable."""

    kind: str
    log_dir: Path
    bootstrap: str = ""
    topic: str = "audit-events"
    materialized: list[Any] = field(default_factory=list)

    def options(self) -> dict[str, Any]:
        """Keyword arguments that point an AuditTrail at this transport."""
        return {"log_dir": self.log_dir, "bootstrap_servers": self.bootstrap, "topic": self.topic}

    def use_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Point code that passes no transport arguments (the user guide's) at this transport."""
        if self.bootstrap:
            monkeypatch.setenv("SECUREML_AUDIT_BOOTSTRAP_SERVERS", self.bootstrap)
            monkeypatch.setenv("SECUREML_AUDIT_TOPIC", self.topic)

    def sync(self) -> None:
        """Make everything logged so far visible to get_audit_logs."""
        if self.kind == "kafka":
            from secureml.materializer import materialize

            self.materialized.append(
                materialize(self.log_dir, bootstrap_servers=self.bootstrap, topic=self.topic, once=True,
                            group=f"test-{self.topic}")
            )


def unique_topic(prefix: str = "audit") -> str:
    """A topic name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["embedded", "kafka"])
def harness(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Harness:
    """The same test against the embedded log and against Kafka."""
    monkeypatch.setenv("SECUREML_AUDIT_PARTITIONS", "3")
    if request.param == "embedded":
        return Harness("embedded", tmp_path / "audit_logs")
    bootstrap = request.getfixturevalue("kafka_bootstrap")
    return Harness("kafka", tmp_path / "audit_logs", bootstrap, unique_topic())


@pytest.fixture
def embedded(tmp_path: Path) -> Harness:
    """The embedded transport only."""
    return Harness("embedded", tmp_path / "audit_logs")


@pytest.fixture
def kafka(kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Harness:
    """The Kafka transport only, on a fresh topic."""
    monkeypatch.setenv("SECUREML_AUDIT_PARTITIONS", "3")
    return Harness("kafka", tmp_path / "audit_logs", kafka_bootstrap, unique_topic())


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the secureml-audit command in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "secureml.audit.cli", *args], capture_output=True, text=True,
        timeout=timeout, env={**os.environ, **(env or {})}, check=False,
    )


def materializer_process(harness: Harness, group: str, log: Path) -> subprocess.Popen[bytes]:
    """A `secureml-audit materialize` service on the harness's topic, its output appended to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "secureml.audit.cli", "materialize", "--log-dir", str(harness.log_dir),
             "--bootstrap-servers", harness.bootstrap, "--topic", harness.topic, "--group", group],
            stdout=out, stderr=out,
        )
