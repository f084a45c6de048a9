"""The transport contract: how a sealed event travels from an AuditTrail to its store.

Every ``Transport`` keeps this contract, whatever its store (Kafka, the embedded log, memory).
"Stored" means durable there: acknowledged by all in-sync replicas, or fsynced.

``emit(key, value, tracker)``
    Takes one sealed Avro event and never blocks on the network. It adds one to
    ``tracker.sent`` and later (or at once) counts the event's fate in the same tracker:
    ``on_delivered`` once it is stored, ``on_failed`` with a reason when it never will be.
    A failed delivery is counted, not raised: the trail reports it from ``flush`` and raises
    ``AuditDeliveryError`` from ``close``. Only an event the transport cannot even take (a
    local queue that stays full) raises ``AuditTransportError``, and is not counted as sent.
    Every event of one key (a trail's operation_id) goes with the same tracker, and events of
    one key are stored in the order emitted. On a closed transport, ``emit`` raises
    ``AuditClosedError``.
``flush(timeout)``
    Waits up to ``timeout`` seconds until every event emitted so far is stored or failed.
    Events still unsettled when it returns stay pending in their trackers.
``close(timeout)``
    Flushes, then releases connections and files. ``closed`` is True from then on; a
    later ``flush`` returns at once and closing again is harmless.
``release(key)``
    Says that the trail of ``key`` is closed and flushed, so the transport may forget
    its delivery accounting.

Which transport a configuration gets is decided in ``factory``, not here: this module
imports no implementation.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from typing import NamedTuple

from secureml.audit.exceptions import AuditClosedError

MAX_KEPT_ERRORS = 10


class DeliveryReport(NamedTuple):
    """What happened to the events of one trail: sent, stored, failed, still unconfirmed."""

    sent: int
    delivered: int
    failed: int
    errors: tuple[str, ...] = ()

    @property
    def pending(self) -> int:
        """Events neither confirmed nor failed yet."""
        return self.sent - self.delivered - self.failed

    @property
    def ok(self) -> bool:
        """True when every event sent is confirmed stored."""
        return self.failed == 0 and self.pending == 0


class DeliveryTracker:
    """Counts the fate of one trail's events; updated from the transport's delivery callbacks.

    Compared and hashed by identity: a transport may key its bookkeeping by tracker.
    """

    __slots__ = ("sent", "delivered", "failed", "errors", "_lock")

    def __init__(self) -> None:
        self.sent = 0
        self.delivered = 0
        self.failed = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DeliveryTracker(sent={self.sent}, delivered={self.delivered}, failed={self.failed})"

    def on_delivered(self, count: int = 1) -> None:
        """Record confirmed events."""
        with self._lock:
            self.delivered += count

    def on_failed(self, reason: str, count: int = 1) -> None:
        """Record events that failed for one reason (the first few distinct reasons are kept)."""
        with self._lock:
            self.failed += count
            if len(self.errors) < MAX_KEPT_ERRORS and reason not in self.errors:
                self.errors.append(reason)

    def report(self) -> DeliveryReport:
        """A consistent snapshot of the counts."""
        with self._lock:
            return DeliveryReport(self.sent, self.delivered, self.failed, tuple(self.errors))


class Transport(ABC):
    """Carries sealed events to their store; the module docstring states the contract."""

    @abstractmethod
    def emit(self, key: bytes, value: bytes, tracker: DeliveryTracker) -> None:
        """Hand over one event without blocking on the network; its fate is counted in tracker."""

    @abstractmethod
    def flush(self, timeout: float) -> None:
        """Wait up to timeout seconds until every emitted event is stored or failed."""

    def release(self, key: bytes) -> None:
        """The trail with this key is closed and flushed: forget its delivery accounting."""

    @abstractmethod
    def close(self, timeout: float) -> None:
        """Flush, then release connections and files; emit raises AuditClosedError afterwards."""

    @property
    @abstractmethod
    def closed(self) -> bool:
        """True once close() was called."""

    def _closed_error(self) -> AuditClosedError:
        """What emit raises once the transport is closed."""
        return AuditClosedError(
            f"{self!r} is closed (by close() or at interpreter exit) and takes no more events; "
            "log through a trail on an open transport (a new AuditTrail without transport= gets one)"
        )
