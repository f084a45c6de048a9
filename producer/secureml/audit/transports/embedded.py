"""Embedded transport: append-only segment files under ``log_dir/log``, one per writing process.

A frame is ``magic, schema version, length (u32 LE), crc32 (u32 LE), Avro bytes``. Each process
appends to its own segment with one ``write`` per event, so several processes can log into
the same directory at once; a reader stops at the first incomplete frame, which makes a
segment readable after a crash up to the last complete event.
"""

from __future__ import annotations

import errno
import os
import secrets
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from secureml.audit._fs import make_private_dir
from secureml.audit.schema import SCHEMA_VERSION
from secureml.audit.transports.base import DeliveryTracker, Transport

MAGIC = 0xA5
_FRAME = struct.Struct("<BBII")  # magic, version, length, crc32
FRAME_HEADER = _FRAME.size
MAX_EVENT_BYTES = 16 * 1024 * 1024
SEGMENT_SUFFIX = ".seg"
SEGMENT_ROLL_BYTES = 256 * 1024 * 1024
LOG_SUBDIR = "log"


def log_path(log_dir: Path) -> Path:
    """Directory that holds the embedded log's segments."""
    return Path(log_dir) / LOG_SUBDIR


def frame(value: bytes, version: int = SCHEMA_VERSION) -> bytes:
    """One framed record of the embedded log."""
    return _FRAME.pack(MAGIC, version, len(value), zlib.crc32(value)) + value


class EmbeddedTransport(Transport):
    """Appends events to this process's own segment under ``log_dir/log``.

    An event counts as delivered once fsync made it durable (at flush, at close, or when the
    segment rolls over); a write or an fsync that fails counts its events as failed.
    """

    def __init__(self, log_dir: Path) -> None:
        make_private_dir(Path(log_dir), link_ok=True)
        self._dir = make_private_dir(log_path(log_dir))
        self._lock = threading.Lock()
        self._fd = -1
        self._size = 0
        self._closed = False
        self._unsynced: dict[DeliveryTracker, int] = {}  # events written since the last fsync

    def _create_segment_file(self) -> int:
        """Create this process's next segment and return it open for appending.

        The one place a segment comes into being: a subclass may override it to put segments
        elsewhere (the transport contract tests use /dev/full, a device that is always full).
        """
        name = f"{time.time_ns() // 1000:016d}-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        return os.open(self._dir / (name + SEGMENT_SUFFIX), flags, 0o600)

    def emit(self, key: bytes, value: bytes, tracker: DeliveryTracker) -> None:
        data = frame(value)
        with self._lock:
            if self._closed:
                raise self._closed_error()
            tracker.sent += 1
            try:
                if self._fd < 0 or self._size >= SEGMENT_ROLL_BYTES:
                    self._close_segment()
                    self._fd = self._create_segment_file()
                    self._size = 0
                written = os.write(self._fd, data)
                if written != len(data):
                    # Undo the torn frame so the segment stays readable, then report.
                    os.ftruncate(self._fd, self._size)
                    raise OSError(errno.ENOSPC, "short write")
            except OSError as exc:
                tracker.on_failed(
                    f"cannot append to the audit log in {self._dir}: {exc}; free disk space or fix permissions"
                )
                return
            self._size += written
            self._unsynced[tracker] = self._unsynced.get(tracker, 0) + 1

    def _sync(self) -> None:
        """fsync the open segment, then settle the events written since the last fsync."""
        if not self._unsynced:
            return
        unsynced, self._unsynced = self._unsynced, {}
        try:
            os.fsync(self._fd)
        except OSError as exc:
            reason = f"cannot make the audit log in {self._dir} durable: fsync failed: {exc}; check the disk"
            for tracker, count in unsynced.items():
                tracker.on_failed(reason, count)
            return
        for tracker, count in unsynced.items():
            tracker.on_delivered(count)

    def _close_segment(self) -> None:
        """Settle the open segment's events, then close it."""
        if self._fd < 0:
            return
        self._sync()
        fd, self._fd = self._fd, -1
        os.close(fd)

    def flush(self, timeout: float) -> None:
        with self._lock:
            self._sync()

    def close(self, timeout: float) -> None:
        with self._lock:
            self._closed = True
            self._close_segment()

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return f"EmbeddedTransport({str(self._dir)!r})"


@dataclass(frozen=True)
class LogRecord:
    """One record read from a segment: where it starts and ends, and its bytes."""

    offset: int
    end: int
    version: int
    value: bytes


@dataclass(frozen=True)
class CorruptSpan:
    """Bytes of a segment that are not a valid record, with the reason."""

    offset: int
    end: int
    reason: str
    raw: bytes


def list_segments(log_dir: Path) -> list[Path]:
    """Segments of the embedded log in creation order."""
    directory = log_path(log_dir)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.endswith(SEGMENT_SUFFIX))


def read_segment(
    path: Path, start: int = 0, *, max_records: int | None = None, max_bytes: int = 64 * 1024 * 1024
) -> Iterator[LogRecord | CorruptSpan]:
    """Records from byte offset ``start`` up to the last complete one (a torn tail is left alone).

    A frame whose checksum fails is yielded as a CorruptSpan and skipped; after broken
    framing the reader resynchronises on the next frame that checks out.
    """
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(max_bytes)
    pos, count, n = 0, 0, len(data)
    while pos + FRAME_HEADER <= n and (max_records is None or count < max_records):
        magic, version, length, crc = _FRAME.unpack_from(data, pos)
        body_end = pos + FRAME_HEADER + length
        if magic == MAGIC and length <= MAX_EVENT_BYTES:
            if body_end > n:
                return  # incomplete: still being written, or torn by a crash
            value = data[pos + FRAME_HEADER : body_end]
            if zlib.crc32(value) == crc:
                yield LogRecord(start + pos, start + body_end, version, value)
            else:
                yield CorruptSpan(start + pos, start + body_end, "crc32 mismatch", data[pos:body_end])
            pos = body_end
            count += 1
            continue
        resume = _resync(data, pos + 1)
        if resume is None:
            return  # nothing valid follows yet: treat as an incomplete tail
        yield CorruptSpan(start + pos, start + resume, "broken framing", data[pos:resume])
        pos = resume
        count += 1


def _resync(data: bytes, pos: int) -> int | None:
    """Position of the next frame whose header and checksum are valid, if any."""
    n = len(data)
    while (pos := data.find(bytes([MAGIC]), pos)) >= 0 and pos + FRAME_HEADER <= n:
        _, _, length, crc = _FRAME.unpack_from(data, pos)
        end = pos + FRAME_HEADER + length
        if length <= MAX_EVENT_BYTES and end <= n and zlib.crc32(data[pos + FRAME_HEADER : end]) == crc:
            return pos
        pos += 1
    return None
