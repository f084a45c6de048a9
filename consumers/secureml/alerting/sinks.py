"""Where alerts go besides the alerts topic: stdout, a JSON-lines file, a webhook.

A sink has ``add(alert)`` and ``flush()``; ``flush`` returns only when every alert added is
delivered, else raises AlertDeliveryError (then the alerter does not checkpoint, and the
alerts come again after a restart: sinks are at-least-once, with ``alert_id`` as the key to
drop repeats; the alerts topic itself is exactly-once).
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TextIO

from secureml.alerting.alert import Alert
from secureml.alerting.exceptions import AlertDeliveryError, AlertingError
from secureml.audit._fs import make_private_dir


def alert_line(alert: Alert) -> str:
    """One alert as a line of JSON."""
    return json.dumps(alert.to_dict(), ensure_ascii=False, sort_keys=True, default=str)


def append_durably(path: Path, data: bytes) -> None:
    """Append to a file (created owner-only, with its directory) and fsync it."""
    make_private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


class Sink(ABC):
    """A destination of alerts; see the module docstring for the contract."""

    @abstractmethod
    def add(self, alert: Alert) -> None:
        """Take one alert (may buffer it until flush)."""

    @abstractmethod
    def flush(self) -> None:
        """Deliver everything added, or raise AlertDeliveryError."""

    def close(self) -> None:
        """Release files and connections."""


class StdoutSink(Sink):
    """Prints one JSON line per alert."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    def add(self, alert: Alert) -> None:
        print(alert_line(alert), file=self.stream or sys.stdout)

    def flush(self) -> None:
        (self.stream or sys.stdout).flush()


class JsonlSink(Sink):
    """Appends one JSON line per alert to a file readable by its owner only, fsynced on flush."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lines: list[str] = []

    def add(self, alert: Alert) -> None:
        self._lines.append(alert_line(alert) + "\n")

    def flush(self) -> None:
        if not self._lines:
            return
        try:
            append_durably(self.path, "".join(self._lines).encode())
        except OSError as exc:
            raise AlertDeliveryError(f"cannot append alerts to {self.path}: {exc.strerror}; fix the path or "
                                     "free disk space, then restart (undelivered alerts come again)") from exc
        self._lines.clear()


class WebhookSink(Sink):
    """POSTs each alert as JSON (header ``Idempotency-Key: <alert_id>``), retrying with backoff."""

    def __init__(self, url: str, *, timeout: float = 5.0, attempts: int = 4) -> None:
        self.url = url
        self.timeout = timeout
        self.attempts = attempts
        self._pending: list[Alert] = []

    def add(self, alert: Alert) -> None:
        self._pending.append(alert)

    def flush(self) -> None:
        while self._pending:
            self._post(self._pending[0])
            self._pending.pop(0)

    def _post(self, alert: Alert) -> None:
        request = urllib.request.Request(
            self.url, data=alert_line(alert).encode(), method="POST",
            headers={"Content-Type": "application/json", "Idempotency-Key": alert.alert_id},
        )
        problem = ""
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(0.2 * 2 ** attempt)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - user's URL
                    if 200 <= response.status < 300:
                        return
                    problem = f"HTTP {response.status}"
            except urllib.error.HTTPError as exc:
                problem = f"HTTP {exc.code}"
                if 400 <= exc.code < 500 and exc.code not in (408, 429):
                    break  # the receiver refuses this alert: retrying will not help
            except OSError as exc:
                problem = str(getattr(exc, "reason", exc))
        raise AlertDeliveryError(f"webhook {self.url} did not take alert {alert.alert_id} ({problem}) after "
                                 f"{self.attempts} attempt(s); check the receiver, then restart the alerter")


def parse_sink(spec: str) -> Sink:
    """A sink from its command-line form: ``stdout``, ``jsonl:PATH`` or ``webhook:URL``."""
    kind, _, target = spec.partition(":")
    if kind == "stdout" and not target:
        return StdoutSink()
    if kind == "jsonl" and target:
        return JsonlSink(target)
    if kind == "webhook" and target.startswith(("http://", "https://")):
        return WebhookSink(target)
    raise AlertingError(f"unknown sink {spec!r}: use stdout, jsonl:PATH or webhook:http(s)://HOST/PATH")
