"""Files written whole or not at all, with exact permissions: keys and checkpoints."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_atomically(path: Path, data: bytes, mode: int, *, replace: bool) -> None:
    """Write a durable file via a temporary name; FileExistsError if it exists and not ``replace``."""
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # exact, whatever the umask
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if the name is taken, even by a racing writer
    finally:
        tmp.unlink(missing_ok=True)
