"""Where alerts go besides the alerts topic: stdout, a JSON-lines file, a webhook.

A sink has ``add(alert)`` and ``flush()``; ``flush`` returns only when every alert added is
delivered, else raises AlertDeliveryError. The alerter never calls a sink from its loop: each
sink has an Outbox, which keeps the alerts owed to it on disk and delivers them from a thread
of its own, in order, each once (a ledger of what was delivered survives restarts), so a slow
or dead sink holds up neither the stream nor the other sinks. A webhook also gets
``Idempotency-Key: <alert_id>``, for the one case a ledger cannot cover (killed mid-request).
"""

from __future__ import annotations

import base64
import collections
import contextlib
import hashlib
import json
import logging
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from secureml.alerting.alert import Alert
from secureml.alerting.exceptions import AlertDeliveryError, AlertingError
from secureml.audit._fs import make_private_dir, open_private

log = logging.getLogger(__name__)


def alert_line(alert: Alert) -> str:
    """One alert as a line of JSON."""
    return json.dumps(alert.to_dict(), ensure_ascii=False, sort_keys=True, default=str)


def append_durably(path: Path, data: bytes) -> None:
    """Append to a file (created owner-only, with its directory) and fsync it."""
    make_private_dir(path.parent)
    fd = open_private(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
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

    def describe(self) -> str:
        """What the sink delivers to, stable across runs (its outbox is named after it)."""
        return type(self).__qualname__


class StdoutSink(Sink):
    """Prints one JSON line per alert."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    def add(self, alert: Alert) -> None:
        print(alert_line(alert), file=self.stream or sys.stdout)

    def flush(self) -> None:
        (self.stream or sys.stdout).flush()

    def describe(self) -> str:
        return "stdout"


class JsonlSink(Sink):
    """Appends one JSON line per alert to a file readable by its owner only, fsynced on flush."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lines: list[str] = []

    def add(self, alert: Alert) -> None:
        self._lines.append(alert_line(alert) + "\n")

    def describe(self) -> str:
        return f"jsonl:{self.path.absolute()}"

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

    def describe(self) -> str:
        return f"webhook:{self.url}"

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


class Outbox:
    """The alerts on their way to one sink: kept on disk, delivered by a thread of the sink's own, each once.

    ``put`` appends alerts durably and returns at once, so a slow or dead sink never holds up the
    stream or the other sinks. The thread hands them to the sink in order; after each delivery
    the alert's id is appended to the sink's ledger, which is read back on start, so a rerun
    delivers what is still owed and nothing twice. A delivery that fails is retried after a
    pause that doubles up to RETRY_MAX seconds, for as long as the alerter runs (and on the
    next run: the alerts stay owed).
    """

    RETRY_MAX = 30.0

    def __init__(self, sink: Sink, directory: Path, name: str) -> None:
        self.sink = sink
        self.name = name
        directory = make_private_dir(directory)
        self._pending_path = directory / f"{name}.pending"
        self._delivered_path = directory / f"{name}.delivered"
        self._delivered = set(_lines(self._delivered_path))
        owed = [Alert.from_avro(base64.b64decode(line)) for line in _lines(self._pending_path)]
        self._owed: collections.deque[Alert] = collections.deque(a for a in owed if a.alert_id not in self._delivered)
        self._known = self._delivered | {a.alert_id for a in self._owed}
        self._cond = threading.Condition()
        self._stop = False
        self.failure = ""  # the last delivery problem, while alerts are owed
        self._thread = threading.Thread(target=self._deliver_loop, name=f"sink-{name}", daemon=True)
        self._thread.start()

    @property
    def owed(self) -> int:
        """Alerts put and not yet delivered."""
        with self._cond:
            return len(self._owed)

    def put(self, alerts: Iterable[Alert]) -> None:
        """Owe these alerts to the sink (durably), unless they were owed or delivered before."""
        fresh = [a for a in alerts if a.alert_id not in self._known]
        if not fresh:
            return
        append_durably(self._pending_path, b"".join(base64.b64encode(a.to_avro()) + b"\n" for a in fresh))
        with self._cond:
            self._known.update(a.alert_id for a in fresh)
            self._owed.extend(fresh)
            self._cond.notify()

    def drain(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for the owed alerts to be delivered; returns how many are still owed."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._owed and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(min(left, 0.05))
            return len(self._owed)

    def close(self) -> None:
        """Stop the thread (what is owed stays owed, on disk) and close the sink."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=1.0)  # a delivery under way may outlive this; it is a daemon thread
        if not self._owed:  # everything delivered: start the next run with empty files
            for path in (self._pending_path, self._delivered_path):
                with contextlib.suppress(OSError):
                    path.unlink()
        self.sink.close()

    def _deliver_loop(self) -> None:
        pause = 0.5
        while True:
            with self._cond:
                while not self._owed and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                alert = self._owed[0]
            try:
                self.sink.add(alert)
                self.sink.flush()
            except Exception as exc:  # noqa: BLE001 - any sink failure: keep it owed, say so, retry later
                self.failure = str(exc)
                log.warning("alert sink %s: %s; retrying in %.0f s (%d alert(s) owed, kept on disk)",
                            self.name, exc, pause, self.owed)
                with self._cond:
                    if not self._stop:
                        self._cond.wait(pause)
                pause = min(pause * 2, self.RETRY_MAX)
                continue
            if not self._record_delivered(alert):
                return  # closed before the ledger took it: the alert stays owed on disk
            pause, self.failure = 0.5, ""
            with self._cond:
                self._delivered.add(alert.alert_id)
                self._owed.popleft()
                self._cond.notify_all()


    def _record_delivered(self, alert: Alert) -> bool:
        """Append a delivered alert's id to the ledger, retrying (bounded pause) until it is written
        or the outbox closes; the alert is never handed to the sink again meanwhile. False when closed
        first: the alert stays owed, and only a rerun delivers it again (the webhook's Idempotency-Key
        lets a receiver drop that copy)."""
        pause, line = 0.5, alert.alert_id.encode() + b"\n"
        while True:
            try:
                append_durably(self._delivered_path, line)
                return True
            except OSError as exc:
                self.failure = (f"alert {alert.alert_id} was delivered but the ledger {self._delivered_path} cannot "
                                f"record it: {exc.strerror or exc}")
                log.warning("alert sink %s: %s; retrying in %.1f s (free disk space or fix the path; delivery "
                            "is held until then)", self.name, self.failure, pause)
                # A failed append may have left part of the line: start the next try on a line of its own.
                line = b"\n" + alert.alert_id.encode() + b"\n"
            with self._cond:
                if self._stop:
                    return False
                self._cond.wait(pause)
                if self._stop:
                    return False
            pause = min(pause * 2, self.RETRY_MAX)


def outbox_name(sink: Sink) -> str:
    """A file name for a sink's outbox: its kind and a digest of what it delivers to."""
    described = sink.describe()
    kind = re.sub(r"[^a-z0-9]+", "-", described.split(":", 1)[0].lower()).strip("-") or "sink"
    return f"{kind}-{hashlib.sha256(described.encode()).hexdigest()[:12]}"


def _lines(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text(encoding="ascii").splitlines() if line]
    except FileNotFoundError:
        return []
