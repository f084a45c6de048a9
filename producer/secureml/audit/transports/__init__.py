"""Transports carry sealed Avro events to their store: Kafka, or the embedded local log.

The contract (``Transport``): ``emit(key, value, tracker)`` takes one event without blocking on
the network and counts its fate in ``tracker``; ``flush(timeout)`` waits until every event
emitted so far is stored or failed; ``close(timeout)`` flushes and releases resources.
One transport per configuration is shared by every trail of a process (``transport_for``).
"""

from __future__ import annotations

from secureml.audit.transports.base import DeliveryReport, DeliveryTracker, Transport, transport_for

__all__ = ["DeliveryReport", "DeliveryTracker", "Transport", "transport_for"]
