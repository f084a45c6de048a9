"""Where the materializer reads events from: Kafka partitions, or the embedded log's segments.

A source reads ``Item``s from positions the lake gives it (Kafka: next offset per partition;
embedded: next byte per segment), sets aside what cannot be decoded in a dead-letter store,
and says when it has caught up with the end it saw at start (for ``--once``).
"""

from __future__ import annotations

import base64
import json
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from secureml.audit.schema import SCHEMA_HEADER
from secureml.audit.transports.embedded import CorruptSpan, list_segments, make_private_dir, read_segment


@dataclass(frozen=True)
class Item:
    """One message read from a source; ``reason`` is set when it is known to be unreadable."""

    source: str
    position: int
    next_position: int
    version: int | None
    value: bytes | None
    key: bytes | None = None
    reason: str | None = None


class Source(ABC):
    """A stream of Items with positions, and a dead-letter store for the bad ones."""

    @abstractmethod
    def start(self, positions: Callable[[], dict[str, int]]) -> None:
        """Begin reading from the positions the lake holds (called again on reassignment)."""

    @abstractmethod
    def poll(self, max_items: int, timeout: float) -> list[Item]:
        """Up to max_items new items, waiting at most timeout seconds for the first."""

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

    def start(self, positions: Callable[[], dict[str, int]]) -> None:
        held = positions()
        self._next = {f"log/{s.name}": held.get(f"log/{s.name}", 0) for s in list_segments(self.log_dir)}
        self._ends = {f"log/{s.name}": s.stat().st_size for s in list_segments(self.log_dir)}
        self._held = held

    def poll(self, max_items: int, timeout: float) -> list[Item]:
        items: list[Item] = []
        for segment in list_segments(self.log_dir):
            source = f"log/{segment.name}"
            start = self._next.setdefault(source, self._held.get(source, 0))
            if segment.stat().st_size <= start:
                continue
            for record in read_segment(segment, start, max_records=max_items - len(items)):
                if isinstance(record, CorruptSpan):
                    items.append(Item(source, record.offset, record.end, None, record.raw, None, record.reason))
                else:
                    items.append(Item(source, record.offset, record.end, record.version, record.value))
                self._next[source] = record.end
            if len(items) >= max_items:
                break
        self._idle = not items
        if not items and timeout > 0:
            time.sleep(min(timeout, 0.05))
        return items

    def caught_up(self) -> bool:
        return self._idle or all(self._next.get(s, 0) >= end for s, end in self._ends.items())

    def lag(self) -> int:
        return sum(max(0, s.stat().st_size - self._next.get(f"log/{s.name}", 0)) for s in list_segments(self.log_dir))

    def dead_letter(self, item: Item, reason: str) -> None:
        self._dlq.append(json.dumps({
            "source": item.source, "position": item.position, "next_position": item.next_position,
            "reason": reason, "value_base64": base64.b64encode(item.value or b"").decode(),
        }))

    def flush_dead_letters(self) -> None:
        if not self._dlq:
            return
        directory = make_private_dir(self.log_dir / "dlq")
        fd = os.open(directory / "dead-letters.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
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


def header_version(headers: list[tuple[str, bytes]] | None) -> int | None:
    """Schema version named by a Kafka message's headers."""
    for name, value in headers or ():
        if name == SCHEMA_HEADER:
            try:
                return int(value)
            except (TypeError, ValueError):
                return None
    return None
