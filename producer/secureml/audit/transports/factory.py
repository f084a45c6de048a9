"""Which transport a configuration gets: Kafka or the embedded log, one per configuration and process.

``transport_for`` picks the implementation by ``config.transport`` and imports it only then,
so a process that logs to the embedded log never loads confluent-kafka. Every transport it
created is closed when the interpreter exits, so buffered events are flushed.
"""

from __future__ import annotations

import atexit
import os
import threading

from secureml.audit.config import AuditConfig
from secureml.audit.transports.base import Transport

RegistryKey = tuple[object, ...]

_registry: dict[RegistryKey, tuple[AuditConfig, Transport]] = {}
_registry_lock = threading.Lock()


def _registry_key(config: AuditConfig) -> RegistryKey:
    """What makes two configurations share a transport.

    Trails that differ only in log_dir share one Kafka producer (one connection, one
    idempotent producer id). The pid is part of the key: a forked child must not reuse its
    parent's producer or file handles.
    """
    if config.transport == "kafka":
        return (os.getpid(), config.bootstrap_servers, config.topic, config.producer_config,
                config.partitions, config.replication_factor)
    return (os.getpid(), config.log_dir)


def create_transport(config: AuditConfig) -> Transport:
    """A new transport for the configuration: KafkaTransport or EmbeddedTransport."""
    if config.transport == "kafka":
        from secureml.audit.transports.kafka import KafkaTransport

        return KafkaTransport(config)
    from secureml.audit.transports.embedded import EmbeddedTransport

    return EmbeddedTransport(config.log_dir)


def transport_for(config: AuditConfig) -> Transport:
    """The process-wide transport for a configuration, created on first use (or after a close)."""
    key = _registry_key(config)
    with _registry_lock:
        entry = _registry.get(key)
        if entry is not None and not entry[1].closed:
            return entry[1]
        transport = create_transport(config)
        _registry[key] = (config, transport)
        return transport


@atexit.register
def _close_all() -> None:
    """Close every transport this process created; a failure is logged, never raised."""
    pid = os.getpid()
    with _registry_lock:
        entries = [entry for key, entry in _registry.items() if key[0] == pid]
        _registry.clear()
    for config, transport in entries:
        try:
            transport.close(config.flush_timeout)
        except Exception:  # interpreter exit: report, never raise
            import logging  # only here: the hot path never logs, and importing logging costs ~10 ms

            logging.getLogger(__name__).warning("closing the %s audit transport failed", config.transport,
                                                exc_info=True)
