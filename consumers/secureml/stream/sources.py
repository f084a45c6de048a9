"""Where the materializer reads events from: Kafka partitions, or the embedded log's segments.

A source reads ``Batch``es (columns of messages from one partition or segment) from the
positions the lake gives it (Kafka: next offset per partition; embedded: next byte per
segment), sets aside what cannot be decoded in a dead-letter store, and says when it has
caught up with the end it saw at start (for ``--once``). Columns, not one object per
message, because per-message Python objects would cost more than decoding itself.
"""

from __future__ import annotations

import base64
import json
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from secureml.audit._fs import make_private_dir, open_private
from secureml.audit.privacy.detectors import redact, redact_bytes
from secureml.audit.schema import SCHEMA_HEADER, SCHEMA_VERSION
from secureml.audit.transports.embedded import CorruptSpan, list_segments, read_segment

__all__ = ["Batch", "EmbeddedSource", "Item", "Source", "dead_letters", "header_version"]


class Item(NamedTuple):
    """One message, as handed to the dead-letter store."""

    source: str
    position: int
    next_position: int
    version: int | None
    value: bytes | None
    key: bytes | None = None


@dataclass
class Batch:
    """Consecutive messages of one source: parallel columns, plus known-bad markers."""

    source: str
    next_position: int  # position after the last message
    positions: list[int] = field(default_factory=list)
    versions: list[int | None] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    broken: dict[int, tuple[int, str]] = field(default_factory=dict)  # index -> (end, reason)

    def item(self, index: int) -> Item:
        """Message ``index`` as an Item."""
        end = self.broken[index][0] if index in self.broken else (
            self.positions[index + 1] if index + 1 < len(self.positions) else self.next_position)
        return Item(self.source, self.positions[index], end, self.versions[index], self.values[index],
                    self.keys[index])


class Source(ABC):
    """A stream of Items with positions, and a dead-letter store for the bad ones."""

    #: Whether dead_letter, flush_dead_letters and committed may run on another thread than poll
    #: (the materializer then commits a batch while it reads the next).
    concurrent_commits = False
    #: Whether start() is followed by a wait long enough (joining a consumer group) to load the decoder meanwhile.
    slow_start = False

    @abstractmethod
    def start(self, positions: Callable[[list[str]], dict[str, int]]) -> None:
        """Begin reading from the positions the lake holds; ``positions(sources)`` asks the lake anew each time."""

    @abstractmethod
    def poll(self, max_items: int, timeout: float) -> list[Batch]:
        """Up to max_items new messages, waiting at most timeout seconds for the first."""

    @abstractmethod
    def caught_up(self) -> bool:
        """True once everything present at start has been read."""

    @abstractmethod
    def dead_letter(self, item: Item, reason: str) -> None:
        """Set an unreadable item aside with the reason."""

    @abstractmethod
    def flush_dead_letters(self) -> None:
        """Make the dead letters durable (before the lake commits past them)."""

    def committed(self, positions: dict[str, int]) -> None:
        """The lake now holds everything before these positions."""

    def lag(self) -> int | None:
        """Items (or bytes) known to be waiting, when the source can tell."""
        return None

    def close(self) -> None:
        """Release connections and files."""


class EmbeddedSource(Source):
    """Reads the segments under ``log_dir/log``; dead letters go to ``log_dir/dlq/dead-letters.jsonl``."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = Path(log_dir)
        self._next: dict[str, int] = {}
        self._ends: dict[str, int] = {}
        self._idle = False
        self._dlq: list[str] = []
        self._positions: Callable[[list[str]], dict[str, int]] = lambda _sources: {}

    def start(self, positions: Callable[[list[str]], dict[str, int]]) -> None:
        segments = list_segments(self.log_dir)
        held = positions([f"log/{s.name}" for s in segments])
        self._next = {f"log/{s.name}": held.get(f"log/{s.name}", 0) for s in segments}
        self._ends = {f"log/{s.name}": s.stat().st_size for s in segments}
        self._positions = positions

    def poll(self, max_items: int, timeout: float) -> list[Batch]:
        batches: list[Batch] = []
        count = 0
        for segment in list_segments(self.log_dir):
            source = f"log/{segment.name}"
            start = self._next.get(source)
            if start is None:  # a segment created after start: ask the lake where it stands
                start = self._next[source] = self._positions([source]).get(source, 0)
            if segment.stat().st_size <= start:
                continue
            batch = Batch(source, start)
            for record in read_segment(segment, start, max_records=max_items - count):
                if isinstance(record, CorruptSpan):
                    batch.broken[len(batch.positions)] = (record.end, record.reason)
                    batch.versions.append(None)
                    batch.values.append(record.raw)
                else:
                    batch.versions.append(record.version)
                    batch.values.append(record.value)
                batch.positions.append(record.offset)
                batch.keys.append(None)
                batch.next_position = record.end
            if batch.positions:
                self._next[source] = batch.next_position
                batches.append(batch)
                count += len(batch.positions)
            if count >= max_items:
                break
        self._idle = not batches
        if not batches and timeout > 0:
            time.sleep(min(timeout, 0.05))
        return batches

    def caught_up(self) -> bool:
        return self._idle or all(self._next.get(s, 0) >= end for s, end in self._ends.items())

    def lag(self) -> int:
        return sum(max(0, s.stat().st_size - self._next.get(f"log/{s.name}", 0)) for s in list_segments(self.log_dir))

    def dead_letter(self, item: Item, reason: str) -> None:
        self._dlq.append(json.dumps({
            "source": item.source, "position": item.position, "next_position": item.next_position,
            "reason": redact(reason), "value_base64": base64.b64encode(redact_bytes(item.value or b"")).decode(),
        }))

    def flush_dead_letters(self) -> None:
        if not self._dlq:
            return
        directory = make_private_dir(self.log_dir / "dlq")
        fd = open_private(directory / "dead-letters.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, ("\n".join(self._dlq) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self._dlq.clear()


def dead_letters(log_dir: Path) -> list[dict[str, object]]:
    """Dead letters of the embedded log, oldest first."""
    path = Path(log_dir) / "dlq" / "dead-letters.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


_CURRENT_HEADERS = [(SCHEMA_HEADER, str(SCHEMA_VERSION).encode())]


def header_version(headers: list[tuple[str, bytes]] | None) -> int | None:
    """Schema version named by a Kafka message's headers."""
    if headers == _CURRENT_HEADERS:
        return SCHEMA_VERSION
    for name, value in headers or ():
        if name == SCHEMA_HEADER:
            try:
                return int(value)
            except (TypeError, ValueError):
                return None
    return None
