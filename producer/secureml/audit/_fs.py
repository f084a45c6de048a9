"""Files and directories of the audit trail: owner-only, written whole or not at all, locked across processes.

The one home of these mechanisms; every package that writes under ``log_dir`` uses them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

from secureml.audit.exceptions import AuditConfigError

_thread_locks: dict[Path, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


_umask_guard = threading.Lock()
_umask_holders = 0  # blocks inside owner_only, on any thread
_umask_previous = 0o022  # the mask to restore when the last one leaves


@contextlib.contextmanager
def owner_only() -> Iterator[None]:
    """Files and directories created meanwhile by libraries that take no mode (delta-rs) are owner-only.

    The mask is the process's: it is set when the first block on any thread enters and restored when the last one
    leaves, so blocks on several threads overlap (a maintenance lease renewed while a day is rewritten) and none
    restores the mask while another is inside.
    """
    global _umask_holders, _umask_previous
    with _umask_guard:
        if _umask_holders == 0:
            _umask_previous = os.umask(0o077)
        _umask_holders += 1
    try:
        yield
    finally:
        with _umask_guard:
            _umask_holders -= 1
            if _umask_holders == 0:
                os.umask(_umask_previous)


def make_private_dir(path: Path, *, link_ok: bool = False) -> Path:
    """Create a directory (and missing parents) readable by its owner only.

    A symbolic link in its place is refused: written through, a link planted inside the log
    directory would send the audit trail (or overwrite files) wherever it points. ``link_ok``
    is for a directory the user names themselves (a ``log_dir``, a report folder).
    """
    if path.is_symlink() and not link_ok:
        raise AuditConfigError(
            f"{path} is a symbolic link: secureml-audit never writes through links inside its folders (one planted "
            f"there could redirect the audit trail). Remove the link (it points to {os.readlink(path)})"
        )
    if not path.is_dir():
        if path.exists() or path.is_symlink():
            raise AuditConfigError(f"{path} exists and is not a directory: give log_dir a folder (or a path that "
                                   "does not exist yet)")
        if not path.parent.is_dir():
            make_private_dir(path.parent, link_ok=True)
        path.mkdir(mode=0o700, exist_ok=True)
    return path


def open_private(path: Path, flags: int, mode: int = 0o600) -> int:
    """``os.open`` of a file inside a private directory, never through a symbolic link."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if path.is_symlink():
            raise AuditConfigError(
                f"{path} is a symbolic link: secureml-audit never writes through links inside its folders; "
                "remove it") from None
        raise exc


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def replacing(path: Path, mode: int = 0o600, *, replace: bool = True) -> Iterator[Path]:
    """A temporary path beside ``path``: what is written there becomes ``path``, whole and durable, or nothing.

    On success the file is fsynced, given exactly ``mode`` and renamed over ``path`` (or, when
    not ``replace``, linked to it: FileExistsError if the name is taken, even by a racing
    writer); on an error the temporary file is removed and ``path`` is untouched.
    """
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)  # exact, whatever the umask
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomically(path: Path, data: bytes, mode: int = 0o600, *, replace: bool = True) -> None:
    """Write a durable file whole or not at all (see ``replacing``)."""
    with replacing(path, mode, replace=replace) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)


@contextlib.contextmanager
def file_lock(path: Path, *, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock on a file, against other processes (flock) and other threads.

    Yields False instead of waiting when ``blocking`` is off and someone else holds it.
    """
    make_private_dir(path.parent, link_ok=True)
    with _thread_locks_guard:
        thread_lock = _thread_locks.setdefault(path, threading.Lock())
    if not thread_lock.acquire(blocking=blocking):
        yield False
        return
    try:
        fd = open_private(path, os.O_RDWR | os.O_CREAT)
    except BaseException:
        thread_lock.release()
        raise
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the flock
        thread_lock.release()
