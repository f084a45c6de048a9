"""The transport contract, delivery accounting, and the per-process transport registry."""

from __future__ import annotations

import atexit
import os
import sys
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from secureml.audit.config import AuditConfig


@dataclass(frozen=True)
class DeliveryReport:
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


@dataclass
class DeliveryTracker:
    """Counts the fate of one trail's events; updated from the transport's delivery callbacks."""

    sent: int = 0
    delivered: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def on_delivered(self, count: int = 1) -> None:
        """Record confirmed events."""
        with self._lock:
            self.delivered += count

    def on_failed(self, reason: str) -> None:
        """Record a failed event with its reason (the first few reasons are kept)."""
        with self._lock:
            self.failed += 1
            if len(self.errors) < 10:
                self.errors.append(reason)

    def report(self) -> DeliveryReport:
        """A consistent snapshot of the counts."""
        with self._lock:
            return DeliveryReport(self.sent, self.delivered, self.failed, tuple(self.errors))


class Transport(ABC):
    """Carries sealed events to their store; see the package docstring for the contract."""

    @abstractmethod
    def emit(self, key: bytes, value: bytes, tracker: DeliveryTracker) -> None:
        """Hand over one event; never blocks on the network."""

    @abstractmethod
    def flush(self, timeout: float) -> None:
        """Wait up to timeout seconds until every emitted event is stored or failed."""

    def release(self, key: bytes) -> None:
        """The trail with this key is closed and flushed: forget its delivery accounting."""

    @abstractmethod
    def close(self, timeout: float) -> None:
        """Flush, then release connections and files."""


_registry: dict[tuple[object, ...], tuple[AuditConfig, Transport]] = {}
_registry_lock = threading.Lock()


def transport_for(config: AuditConfig) -> Transport:
    """The process-wide transport for a configuration, created on first use.

    Trails that differ only in log_dir share one Kafka producer (one connection, one
    idempotent producer id). Keyed by pid too: a forked child must not reuse its parent's
    producer or file handles.
    """
    if config.transport == "kafka":
        key: tuple[object, ...] = (os.getpid(), config.bootstrap_servers, config.topic, config.producer_config,
                                   config.partitions, config.replication_factor)
    else:
        key = (os.getpid(), config.log_dir)
    with _registry_lock:
        entry = _registry.get(key)
        transport = entry[1] if entry else None
        if transport is None:
            if config.transport == "kafka":
                from secureml.audit.transports.kafka import KafkaTransport

                transport = KafkaTransport(config)
            else:
                from secureml.audit.transports.embedded import EmbeddedTransport

                transport = EmbeddedTransport(config.log_dir)
            _registry[key] = (config, transport)
        return transport


@atexit.register
def _close_all() -> None:
    pid = os.getpid()
    for key, (config, transport) in list(_registry.items()):
        if key[0] != pid:
            continue
        try:
            transport.close(config.flush_timeout)
        except Exception as exc:  # noqa: BLE001 - interpreter exit: report, never raise
            print(f"secureml-audit: closing the {config.transport} transport failed: {exc}", file=sys.stderr)
    _registry.clear()
