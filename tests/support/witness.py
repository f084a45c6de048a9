"""A real witness process on a loopback port, started with `secureml-audit witness` as a user would."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from secureml.integrity.keys import generate_key, load_signing_key
from secureml.integrity.notes import COSIGNATURE_V1, NoteKey

LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")


@dataclass
class WitnessProcess:
    """One witness: its own key and state directory; start, stop and restart it."""

    home: Path
    log_vkeys: list[str]
    name: str = "witness.test/w1"
    extra: list[str] = field(default_factory=list)  # more options, e.g. --bootstrap-servers
    url: str = ""
    process: subprocess.Popen[bytes] | None = None
    restarts: int = field(default=0)

    def __post_init__(self) -> None:
        self.key_path = self.home / "witness_key.pem"
        if not self.key_path.exists():
            generate_key(self.key_path)
        self.state = self.home / "state"
        self.key = NoteKey(self.name, load_signing_key(self.key_path).public_key(), COSIGNATURE_V1)

    @property
    def vkey(self) -> str:
        """The witness's cosignature/v1 vkey."""
        return self.key.vkey()

    @property
    def stderr(self) -> Path:
        """Where the process's log lines go."""
        return self.home / f"witness-{self.restarts}.log"

    def start(self, port: int = 0) -> WitnessProcess:
        """Start the witness and wait until it listens (it prints its URL)."""
        args = [sys.executable, "-m", "secureml.audit.cli", "witness", "--name", self.name, "--key",
                str(self.key_path), "--state", str(self.state), "--listen", f"127.0.0.1:{port}"]
        for vkey in self.log_vkeys:
            args += ["--log", vkey]
        args += self.extra
        with self.stderr.open("wb") as err:
            self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, env=dict(os.environ))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            match = LISTENING.search(self.stderr.read_text())
            if match:
                self.url = match.group(1)
                return self
            if self.process.poll() is not None:
                raise AssertionError(f"the witness exited: {self.stderr.read_text()}")
            time.sleep(0.05)
        raise AssertionError(f"the witness did not start: {self.stderr.read_text()}")

    def stop(self) -> None:
        """Stop the process (SIGTERM) and wait for it."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)
        self.process = None

    def restart(self) -> WitnessProcess:
        """Stop, then start again on the same port with the same state."""
        port = int(self.url.rsplit(":", 1)[1])
        self.stop()
        self.restarts += 1
        return self.start(port)

    def wait_cosigned(self, size: int, timeout: float = 120) -> int:
        """Wait until the witness has cosigned a tree of at least ``size`` leaves; the size it holds then."""
        deadline = time.monotonic() + timeout
        held = 0
        while held < size and time.monotonic() < deadline:
            held = max([int(json.loads(p.read_text())["size"]) for p in self.state.glob("*.json")], default=0)
            time.sleep(0.1)
        return held

    def pairs(self) -> list[str]:
        """The materializer's --witness value: URL, VKEY."""
        return [self.url, self.vkey]
