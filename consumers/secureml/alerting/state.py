"""The alerter's checkpoint: rule state and log positions in one owner-only JSON file, replaced atomically."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from pathlib import Path
from typing import Any

from secureml.alerting.exceptions import AlertStateError
from secureml.audit._fs import file_lock, make_private_dir, write_atomically

log = logging.getLogger(__name__)

STATE_FORMAT = 1


class StateStore:
    """``<directory>/state.json``, locked against a second alerter on the same directory while open."""

    def __init__(self, directory: Path) -> None:
        self.directory = make_private_dir(directory)
        self.path = self.directory / "state.json"
        self._lock = contextlib.ExitStack()
        if not self._lock.enter_context(file_lock(self.directory / ".lock", blocking=False)):
            self._lock.close()
            raise AlertStateError(f"another alerter is running on {self.directory}: stop it, or give this one "
                                  "its own --log-dir")
        self._writer: threading.Thread | None = None
        self._failure: AlertStateError | None = None

    def load(self) -> dict[str, Any] | None:
        """The last checkpoint, or None before the first."""
        try:
            state: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise AlertStateError(f"cannot read {self.path}: {exc}; restore it from a backup, or delete it to "
                                  "replay the whole log (alerts after the old checkpoint come again)") from exc
        if state.get("format") != STATE_FORMAT:
            raise AlertStateError(f"{self.path} has format {state.get('format')!r}, this alerter reads "
                                  f"{STATE_FORMAT}: upgrade secureml-audit")
        return state

    def save(self, state: dict[str, Any], *, background: bool = False) -> None:
        """Write the checkpoint to a temporary file, fsync it, and rename it over the old one.

        The state is serialised at once (so the rules may change it right after); with
        ``background`` the write and fsync happen in a thread, one at a time and in order, and a
        failure is raised by the next ``save`` or ``wait``.
        """
        data = json.dumps({"format": STATE_FORMAT, **state}, separators=(",", ":"), allow_nan=False).encode()
        self.wait()
        if not background:
            self._write(data)
            return
        self._writer = threading.Thread(target=self._write_noting_failure, args=(data,), name="alerter-checkpoint",
                                        daemon=True)
        self._writer.start()

    def wait(self) -> None:
        """Return once the checkpoint being written in the background is durable; raise if it failed."""
        if self._writer is not None:
            self._writer.join()
            self._writer = None
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def _write(self, data: bytes) -> None:
        try:
            write_atomically(self.path, data)
        except OSError as exc:
            raise AlertStateError(f"cannot write {self.path}: {exc.strerror}; free disk space or fix "
                                  "permissions, then restart (nothing past the last checkpoint is lost)") from exc

    def _write_noting_failure(self, data: bytes) -> None:
        try:
            self._write(data)
        except AlertStateError as exc:
            self._failure = exc

    def close(self) -> None:
        """Wait for a checkpoint still being written, then release the lock."""
        try:
            self.wait()
        except AlertStateError as exc:  # the run is ending anyway: the next one resumes at the checkpoint before
            log.error("alerts: %s", exc)
        finally:
            self._lock.close()
