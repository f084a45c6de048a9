"""A Kafka broker with TLS, SASL/SCRAM and ACLs for the security tests, and the principals on it.

``SecureBroker`` runs ``scripts/kafka-local start --secure`` on free ports with a data dir of its
own, so the plain broker other tests and engineers use (127.0.0.1:9092, <repo>/.kafka-local)
is never touched, and stops only that broker. ``provision`` creates SCRAM users and ACLs as the
broker's admin, the way an operator would with kafka-configs and kafka-acls.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialUpsertion,
)

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "kafka-local"
START_TIMEOUT_S = 300  # first use may fetch the jars from Maven Central
WAIT_S = 30.0  # the longest any step here waits for the broker


class SecureBrokerError(RuntimeError):
    """The secure broker could not be started or provisioned."""


@dataclass
class SecureBroker:
    """scripts/kafka-local in secure mode on one port and data dir."""

    port: int
    data_dir: Path
    client: dict[str, str] = field(default_factory=dict)  # the KEY=VALUE lines start printed
    bootstrap: str = ""
    started_in: float = 0.0

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_LOCAL_")}
        if "KAFKA_LOCAL_HOME" in os.environ:  # honour a relocated jar cache
            env["KAFKA_LOCAL_HOME"] = os.environ["KAFKA_LOCAL_HOME"]
        env.update(KAFKA_LOCAL_PORT=str(self.port), KAFKA_LOCAL_DATA=str(self.data_dir))
        return env

    def run(self, *args: str, timeout: float = START_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(SCRIPT), *args], env=self.env(), capture_output=True, text=True,
                              timeout=timeout, check=False)

    def start(self) -> None:
        """Start the broker; fails with the script's own explanation (no Java, no openssl, ...)."""
        if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
            raise SecureBrokerError("no java on PATH (and no JAVA_HOME): the secure Kafka broker needs Java 17+ "
                                    "(apt-get install openjdk-17-jre-headless)")
        began = time.monotonic()
        proc = self.run("start", "--secure")
        self.started_in = time.monotonic() - began
        if proc.returncode != 0:
            raise SecureBrokerError(f"scripts/kafka-local start --secure failed ({proc.returncode}):\n"
                                    f"{proc.stdout}\n{proc.stderr[-4000:]}")
        self.client, self.bootstrap = parse_start_output(proc.stdout)

    def pid(self) -> int | None:
        try:
            return int((self.data_dir / "kafka.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def stop(self) -> None:
        """Stop this broker only: the script's stop on this data dir, then SIGKILL of its own pid."""
        pid = self.pid()
        try:
            self.run("stop", timeout=90)
        finally:
            if pid is not None and _is_broker_of(pid, self.data_dir):
                os.kill(pid, signal.SIGKILL)

    @property
    def ca_file(self) -> str:
        return self.client["KAFKA_LOCAL_CA_FILE"]

    def settings(self, user: str | None, password: str | None) -> dict[str, str]:
        """librdkafka settings of a SASL_SSL client (the library's producer_config)."""
        base = {"security.protocol": "SASL_SSL", "sasl.mechanisms": self.client["KAFKA_LOCAL_SASL_MECHANISM"],
                "ssl.ca.location": self.ca_file}
        if user is not None:
            base.update({"sasl.username": user, "sasl.password": password or ""})
        return base

    def admin_settings(self) -> dict[str, str]:
        return dict(json.loads(Path(self.client["KAFKA_LOCAL_ADMIN_CONFIG"]).read_text()))

    def admin(self) -> AdminClient:
        return AdminClient({"bootstrap.servers": self.bootstrap, **self.admin_settings()})


def parse_start_output(stdout: str) -> tuple[dict[str, str], str]:
    """(the KEY=VALUE lines, the bootstrap address on the last line) of ``start`` in secure mode."""
    lines = stdout.strip().splitlines()
    client = dict(line.split("=", 1) for line in lines[:-1])
    return client, lines[-1]


def _is_broker_of(pid: int, data_dir: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z" and "kafka.Kafka" in cmdline and str(data_dir) in cmdline


@dataclass(frozen=True)
class Grant:
    """One ACL: ``principal`` may do ``operation`` on a topic or group (literal or prefixed name)."""

    principal: str
    operation: str  # READ, WRITE, CREATE, DESCRIBE, ...
    resource: str  # "topic" or "group"
    name: str
    prefixed: bool = False

    def binding(self) -> AclBinding:
        return AclBinding(
            ResourceType.TOPIC if self.resource == "topic" else ResourceType.GROUP, self.name,
            ResourcePatternType.PREFIXED if self.prefixed else ResourcePatternType.LITERAL,
            f"User:{self.principal}", "*", AclOperation[self.operation], AclPermissionType.ALLOW,
        )


def provision(broker: SecureBroker, users: list[str], topics: dict[str, int], grants: list[Grant]) -> dict[str, str]:
    """Create SCRAM users (random passwords, returned by user), topics and ACLs as the admin."""
    admin = broker.admin()
    passwords = {user: secrets.token_hex(16) for user in users}
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
    upserts: list[UserScramCredentialAlteration] = [
        UserScramCredentialUpsertion(user, info, pw.encode()) for user, pw in passwords.items()]
    _results(admin.alter_user_scram_credentials(upserts, request_timeout=WAIT_S))
    new = [NewTopic(name, num_partitions=n, replication_factor=1,
                    config={"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"})
           for name, n in topics.items()]
    _results(admin.create_topics(new, operation_timeout=WAIT_S, request_timeout=WAIT_S))
    _results(admin.create_acls([g.binding() for g in grants], request_timeout=WAIT_S))
    return passwords


def _results(futures: dict[Any, Any]) -> None:
    for what, future in futures.items():
        try:
            future.result(timeout=WAIT_S)
        except Exception as exc:  # the admin API's own error types vary by call
            raise SecureBrokerError(f"provisioning {what} as admin failed: {exc}") from exc


def wait_until_authenticates(broker: SecureBroker, settings: dict[str, str], topic: str) -> None:
    """Wait (bounded) until a new SCRAM user authenticates and its ACLs show ``topic``."""
    quiet: dict[str, Any] = {"bootstrap.servers": broker.bootstrap, **settings, "error_cb": lambda _err: None}
    admin = AdminClient(quiet)
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            if topic in admin.list_topics(timeout=2).topics:
                return
        except Exception:  # not authenticated yet: the credential is still being applied
            pass
        time.sleep(0.2)
    raise SecureBrokerError(f"{settings.get('sasl.username')} could not see {topic} within {WAIT_S:.0f}s")


@dataclass
class MatrixRow:
    principal: str
    operation: str
    expected: str  # "allowed" | "refused"
    seen: str
    detail: str


def gist(detail: str) -> str:
    """The telling part of an error message: who was refused what, with the broker's code."""
    found = re.search(r"refused User:\S+.*?\([A-Z_]+\)|cannot reach Kafka at \S+ within \d+s|"
                      r"refused the connection of User:\S+|Group authorization failed|Topic authorization failed",
                      detail)
    return found.group(0) if found else detail


def matrix_table(rows: list[MatrixRow]) -> str:
    """The ACL matrix as a fixed-width text table."""
    head = ("principal", "operation", "expected", "seen", "ok", "how")
    body = [(r.principal, r.operation, r.expected, r.seen, "yes" if r.expected == r.seen else "NO",
             gist(r.detail)[:110]) for r in rows]
    widths = [max(len(str(row[i])) for row in [head, *body]) for i in range(len(head))]
    line = "  ".join("-" * w for w in widths)
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head), line, *(fmt.format(*row) for row in body)])
