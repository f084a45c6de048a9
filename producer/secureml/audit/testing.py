"""Helpers for testing code that audits: capture events in memory instead of storing them.

``capture_events()`` hands out a ``CapturingTransport``; give it to ``AuditTrail(transport=...)``
and read the events back as dicts shaped like the results of ``get_audit_logs``::

    from secureml.audit import AuditTrail
    from secureml.audit.testing import capture_events

    def test_training_reads_patients_for_a_purpose():
        with capture_events() as captured:
            audit = AuditTrail("train", transport=captured.transport)
            audit.log_data_access("patients", ["age"], 100, "model training")
            audit.close()
        assert [e["event_type"] for e in captured.events] == ["audit_started", "data_access", "audit_closed"]
        assert captured.events[1]["purpose"] == "model training"

``capture_events(fail_with="disk full")`` makes every delivery fail instead, to test how code
copes with an audit that cannot be stored (``close()`` then raises ``AuditDeliveryError``).
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any, cast

import fastavro

from secureml.audit.events import fields_of, payload_fields
from secureml.audit.exceptions import AuditValidationError
from secureml.audit.privacy.reveal import Revealer, needs_reveal, reveal_log
from secureml.audit.schema import JSON_FIELDS, TIMESTAMP_FIELDS, load_schema
from secureml.audit.timeutil import micros_to_iso
from secureml.audit.transports.base import DeliveryTracker, Transport


@cache
def _reader_schema() -> Any:
    """The event schema with timestamps read as plain microseconds (formatted like get_audit_logs)."""
    schema = load_schema()
    fields = [{**f, "type": "long"} if f["name"] in TIMESTAMP_FIELDS else f for f in schema["fields"]]
    return fastavro.parse_schema({**schema, "fields": fields})


@cache
def _envelope_fields() -> tuple[str, ...]:
    """Fields every event carries, whatever its type: the schema's fields minus the payload's."""
    payload = {name for name, _ in payload_fields()}
    return tuple(f["name"] for f in load_schema()["fields"] if f["name"] not in payload)


def decode_event(value: bytes) -> dict[str, Any]:
    """One sealed Avro event as a dict shaped like a ``get_audit_logs`` result.

    The envelope plus the payload fields of its event type; timestamps as UTC ISO 8601 text;
    JSON fields (``context``, ``parameters``, ``details``, ...) parsed; personal values revealed
    with the key store readers use.
    """
    record = cast(dict[str, Any], fastavro.schemaless_reader(io.BytesIO(value), _reader_schema(), None))
    event = {name: record[name] for name in _envelope_fields()}
    event.update((name, record[name]) for name in fields_of(record["event_type"]))
    for name in TIMESTAMP_FIELDS:
        event[name] = micros_to_iso(event[name])
    for name in JSON_FIELDS.intersection(event):
        if event[name] is not None:
            event[name] = json.loads(event[name])
    if needs_reveal(event):  # pseudonyms and ciphertexts read as logged, as get_audit_logs shows them
        from secureml.audit.privacy import reader_keystore

        store = reader_keystore()
        if store is not None:
            return reveal_log(Revealer(store), event)
    return event


class CapturingTransport(Transport):
    """A Transport that keeps every event in memory instead of storing it.

    Every emitted ``(key, value)`` lands in ``emitted``, and the ones counted delivered also in
    ``stored``; ``events`` decodes the stored ones. Deliveries are settled inside ``emit``, so
    a trail's report is final at once.

    ``fail_with`` makes deliveries fail with that reason; ``fail_after=n`` lets the first n
    events through and fails the rest (with ``fail_with``, or a reason that names the option).
    """

    def __init__(self, *, fail_with: str | None = None, fail_after: int | None = None) -> None:
        if fail_after is not None and fail_after < 0:
            raise AuditValidationError("fail_after", "must be 0 or more, or None", where="CapturingTransport")
        if fail_with is None and fail_after is not None:
            fail_with = f"CapturingTransport(fail_after={fail_after}) fails every event after the first {fail_after}"
        self._failure_reason = fail_with
        self._deliverable = 0 if fail_after is None else fail_after
        self._lock = threading.Lock()
        self._closed = False
        self.emitted: list[tuple[bytes, bytes]] = []
        self.stored: list[tuple[bytes, bytes]] = []

    def emit(self, key: bytes, value: bytes, tracker: DeliveryTracker) -> None:
        with self._lock:
            if self._closed:
                raise self._closed_error()
            tracker.sent += 1
            failure = None if len(self.emitted) < self._deliverable else self._failure_reason
            self.emitted.append((key, value))
            if failure is None:
                self.stored.append((key, value))
        if failure is None:
            tracker.on_delivered()
        else:
            tracker.on_failed(failure)

    def flush(self, timeout: float) -> None:
        """Nothing to wait for: every event was settled when it was emitted."""

    def close(self, timeout: float) -> None:
        with self._lock:
            self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def events(self) -> list[dict[str, Any]]:
        """The stored events decoded (see ``decode_event``), in the order they were emitted."""
        with self._lock:
            stored = list(self.stored)
        return [decode_event(value) for _, value in stored]

    def __repr__(self) -> str:
        return f"CapturingTransport({len(self.emitted)} events emitted, {len(self.stored)} stored)"


@dataclass(frozen=True)
class CapturedEvents:
    """What ``capture_events`` yields: the transport to give to AuditTrail, and what it captured."""

    transport: CapturingTransport

    @property
    def events(self) -> list[dict[str, Any]]:
        """The stored events decoded, in the order they were emitted."""
        return self.transport.events


@contextmanager
def capture_events(*, fail_with: str | None = None, fail_after: int | None = None) -> Iterator[CapturedEvents]:
    """Capture the events of trails on ``captured.transport``; the transport is closed on exit.

    ``fail_with`` and ``fail_after`` are those of ``CapturingTransport``. As a pytest fixture::

        @pytest.fixture
        def captured():
            with capture_events() as captured:
                yield captured
    """
    transport = CapturingTransport(fail_with=fail_with, fail_after=fail_after)
    try:
        yield CapturedEvents(transport)
    finally:
        transport.close(0)
