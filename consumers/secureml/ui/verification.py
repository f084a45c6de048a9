"""``verify`` for the integrity page: run in a background thread, never inside a page's request.

A page asks for the latest result; when none covers the lake's current version, one run is
started (at most one at a time) and the page shows that it is running and polls. Verifying
10M events takes minutes; a page takes milliseconds.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from secureml.audit.exceptions import AuditError
from secureml.integrity import VerificationResult, verify
from secureml.lake.table import Lake

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerifyState:
    """What the integrity page shows: the newest finished run, and whether one is under way."""

    result: VerificationResult | None
    error: str | None  # why the newest run could not verify (no lake yet, ...)
    finished_at: float | None  # time.time() of the newest finished run
    running_since: float | None  # time.time() the current run started, or None
    checked_version: int | None  # table version the newest finished run read
    current_version: int | None  # table version now
    rows_done: int = 0
    rows_total: int = 0

    @property
    def stale(self) -> bool:
        """True when the lake changed since the newest finished run."""
        return self.finished_at is None or self.checked_version != self.current_version


class BackgroundVerifier:
    """Runs ``verify(log_dir, public_key)`` in one background thread, on demand, and keeps the newest result."""

    def __init__(self, log_dir: str | os.PathLike[str], public_key: str | os.PathLike[str] | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.public_key = public_key
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._result: VerificationResult | None = None
        self._error: str | None = None
        self._finished_at: float | None = None
        self._running_since: float | None = None
        self._checked_version: int | None = None
        self._progress = (0, 0)

    def _version(self) -> int | None:
        lake = Lake(self.log_dir)
        return lake.snapshot().version if lake.exists() else None

    def state(self, *, start: bool = True) -> VerifyState:
        """The newest result; with ``start``, begin a run when none covers the current version."""
        current = self._version()
        with self._lock:
            fresh = self._finished_at is not None and self._checked_version == current
            if start and not fresh and self._thread is None:
                self._running_since = time.time()
                self._thread = threading.Thread(target=self._run, args=(current,), name="ui-verify", daemon=True)
                self._thread.start()
            return VerifyState(self._result, self._error, self._finished_at, self._running_since,
                               self._checked_version, current, *self._progress)

    def wait(self, timeout: float) -> bool:
        """Wait for the current run to end (tests and the benchmark); True when none is running."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self._thread is None

    def _on_progress(self, done: int, total: int) -> None:
        self._progress = (done, total)

    def _run(self, version: int | None) -> None:
        result, error = None, None
        try:
            result = verify(self.log_dir, public_key=self.public_key, progress=self._on_progress)
        except AuditError as exc:
            error = str(exc)
        except Exception as exc:  # a page must say what went wrong, not hang on "running" forever
            log.exception("verify failed")
            error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._result, self._error = result, error
            self._finished_at, self._checked_version = time.time(), version
            self._running_since, self._thread = None, None
