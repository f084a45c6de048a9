"""The alerter's checkpoint: rule state and log positions in one owner-only JSON file, replaced atomically."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from secureml.alerting.exceptions import AlertStateError
from secureml.audit._fs import file_lock, make_private_dir, write_atomically

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

    def save(self, state: dict[str, Any]) -> None:
        """Write the checkpoint to a temporary file, fsync it, and rename it over the old one."""
        data = json.dumps({"format": STATE_FORMAT, **state}, separators=(",", ":"), allow_nan=False).encode()
        try:
            write_atomically(self.path, data)
        except OSError as exc:
            raise AlertStateError(f"cannot write {self.path}: {exc.strerror}; free disk space or fix "
                                  "permissions, then restart (nothing past the last checkpoint is lost)") from exc

    def close(self) -> None:
        """Release the lock."""
        self._lock.close()
