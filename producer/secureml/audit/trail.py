"""AuditTrail: records the privacy-relevant steps of one operation as a hash-chained event stream."""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from hashlib import sha256
from types import ModuleType, TracebackType
from typing import Any

from secureml.audit import accelerator
from secureml.audit import events as ev
from secureml.audit.codec import PayloadPlan, encode_long, encode_string, encode_string_array
from secureml.audit.config import AuditConfig, resolve_config
from secureml.audit.exceptions import AuditClosedError, AuditDeliveryError, AuditError, AuditValidationError
from secureml.audit.privacy import protector_for, resolve_policy
from secureml.audit.schema import SCHEMA_VERSION
from secureml.audit.timeutil import micros_to_iso, now_micros
from secureml.audit.transports import DeliveryReport, DeliveryTracker, Transport, transport_for
from secureml.audit.version import __version__

INFO, WARNING, ERROR = ev.LEVELS["INFO"], ev.LEVELS["WARNING"], ev.LEVELS["ERROR"]
_TYPE_BYTES = {t: encode_string(t) for t in ev.EVENT_FIELDS}
_LEVEL_BYTES = {level: encode_long(level) for level in range(0, 60, 5)}
_HASH_LENGTH = encode_long(64)  # every hash is 64 hex characters
# The accelerator's EventChain (native/src/event.rs), or None for the pure-Python EventChain below.
_native_events = None if accelerator.native is None else accelerator.native.EventChain
_SMALL_LONGS = [encode_long(n) for n in range(64)]  # seq of a trail's first events
_HOST = socket.gethostname()
_MAX_MESSAGE_CHARS = 2000  # error messages are cut: they may quote data


def _oversized(size: int, values: dict[str, Any], where: str) -> AuditValidationError:
    """The error for an event over MAX_EVENT_BYTES, naming its largest value (or the trail's context)."""
    sizes = {name: len(value) for name, value in values.items() if isinstance(value, str)}
    field = max(sizes, key=sizes.__getitem__) if sizes and max(sizes.values()) > size // 2 else "context"
    return AuditValidationError(
        field, f"makes the event {size:,} bytes encoded, over the limit of {ev.MAX_EVENT_BYTES:,} bytes (the same for "
        "every transport; Kafka's default largest message is 1 MiB): log a summary, a reference or a hash of "
        "large values instead", where=where)


def _uuid4() -> str:
    """A random (version 4) UUID as text: what ``str(uuid.uuid4())`` gives, without the uuid module."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40
    raw[8] = raw[8] & 0x3F | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class EventChain:
    """A trail's hash chain and the envelope of its events, in pure Python.

    Byte for byte what the accelerator's ``EventChain`` writes, which trails use when it is there
    (it also logs a model inference in one call). ``append`` seals one event and hands it to the
    transport; the state (seq, last timestamp, previous hash) moves on only once the transport took
    it. The trail's lock serialises the calls.
    """

    def __init__(self, version: bytes, id_prefix: str, operation: bytes, trail: bytes, start: int, max_bytes: int,
                 clock: ModuleType, emit: Callable[[bytes, bytes, DeliveryTracker], None], key: bytes,
                 tracker: DeliveryTracker) -> None:
        self._version = version
        self._id_prefix = id_prefix
        self._operation = operation
        self._trail = trail
        self._max_bytes = max_bytes
        self._clock = clock  # the trail's module: now_micros is looked up per event (tests set the clock through it)
        self._emit = emit
        self._key = key
        self._tracker = tracker
        self.seq = 0
        self.closed = False
        self._last_ts = start
        self._prev_hash = encode_string("")
        # The last user and its encoding: a trail's events mostly carry the same user (the trail's, or its
        # pseudonym, the same string object each time), so it is encoded once, not per event.
        self._user: tuple[str | None, bytes] = (None, b"\x00")

    def append(self, event_type: bytes, level: int, user: str | None, payload: bytes, now: int | None,
               closing: bool) -> str | int:
        """Seal an event of an encoded type and payload, at ``now`` or the clock's time, and emit it: its id, or
        the message's size when that is over the limit and nothing was recorded."""
        seq = self.seq
        ts = now if now is not None else self._clock.now_micros()
        if ts < self._last_ts:  # the wall clock stepped back: keep the operation's order
            ts = self._last_ts
        event_id = self._id_prefix + str(seq)
        user_bytes = self._user
        if user is not user_bytes[0]:
            user_bytes = self._user = (user, b"\x00" if user is None else b"\x02" + encode_string(user))
        prefix = b"".join((
            self._version,
            encode_string(event_id),
            self._operation,
            _SMALL_LONGS[seq] if seq < 64 else encode_long(seq),
            event_type,
            _LEVEL_BYTES.get(level) or encode_long(level),
            encode_long(ts),
            user_bytes[1],
            self._trail,
            payload,
            self._prev_hash,
        ))
        # codec.seal: the message is the prefix, then its SHA-256 as an Avro string (the next event's previous hash)
        hashed = _HASH_LENGTH + sha256(prefix).hexdigest().encode()
        message = prefix + hashed
        if len(message) > self._max_bytes:
            return len(message)
        self._emit(self._key, message, self._tracker)
        self.seq = seq + 1
        self._last_ts = ts
        self._prev_hash = hashed
        if closing:
            self.closed = True
        return event_id


class AuditTrail:
    """An append-only, hash-chained audit trail of one operation.

    Every event carries the trail's ``operation_id`` (the Kafka key, so one operation stays in
    order on one partition), a gapless ``seq`` starting at 0 (``audit_started``), and
    ``prev_hash``/``hash`` linking it to the previous event. Events below ``log_level`` are not
    recorded; ``audit_started`` and ``audit_closed`` always are, so a trail is never open-ended.

    ``bootstrap_servers`` (or ``SECUREML_AUDIT_BOOTSTRAP_SERVERS``) sends events to Kafka;
    without it they go to the embedded log under ``log_dir``. ``producer_config`` passes raw
    librdkafka settings (TLS, SASL, ...). ``user`` is the default user of every event.
    """

    def __init__(
        self,
        operation_name: str,
        log_dir: str | os.PathLike[str] | None = None,
        log_level: int | str = INFO,
        context: dict[str, Any] | None = None,
        regulations: Sequence[str] | None = None,
        *,
        user: str | None = None,
        bootstrap_servers: str | None = None,
        topic: str | None = None,
        producer_config: dict[str, Any] | None = None,
        transport: Transport | None = None,
        privacy: Any = None,
    ) -> None:
        where = "AuditTrail"
        self.operation_name = ev.text(operation_name, "operation_name", where)
        self._log_level = ev.level(log_level, "log_level", where)
        context_json = ev.json_object({} if context is None else context, "context", where, required=True)
        self.context: dict[str, Any] = dict(context or {})
        self.regulations = ev.text_list([] if regulations is None else regulations, "regulations", where)
        self._user = ev.optional_text(user, "user", where)
        self.config: AuditConfig = resolve_config(
            log_dir=log_dir, bootstrap_servers=bootstrap_servers, topic=topic, producer_config=producer_config
        )
        self.log_dir = str(self.config.log_dir)
        self._privacy = protector_for(resolve_policy(privacy), self.config)
        if self._privacy is not None and context_json:
            subject = None if self._user is None else self._privacy.name_of(self._user)
            redacting = "context" in self._privacy.policy.redact_fields
            context_json = self._privacy.json_text(context_json, subject, redacting)
        self._transport = transport or transport_for(self.config)
        self.operation_id = _uuid4()
        self._key = self.operation_id.encode()
        self._start = now_micros()
        self.start_time = micros_to_iso(self._start)
        self._lock = threading.Lock()
        self._tracker = DeliveryTracker()
        # Envelope fields that never change within the trail are encoded once.
        chain = (
            encode_long(SCHEMA_VERSION),
            f"{self.operation_id}:",
            encode_string(self.operation_id) + encode_string(self.operation_name) + encode_long(self._start),
            encode_string_array(self.regulations) + encode_string(context_json or "{}") + encode_string(_HOST)
            + encode_long(os.getpid()) + encode_string(__version__),
            self._start, ev.MAX_EVENT_BYTES, sys.modules[__name__], self._transport.emit, self._key, self._tracker,
        )
        # log_model_inference in one native call, when the accelerator is there and does all the policy asks
        self._inference: Callable[..., str | None | bool] | None = None
        plan = ev.PLANS["model_inference"]
        privacy_plan = None if self._privacy is None else self._privacy.native_plan("model_inference", plan.names)
        if _native_events is None:
            self._chain: Any = EventChain(*chain)
        else:
            self._chain = _native_events(*chain, self._log_level, self._user, _TYPE_BYTES["model_inference"],
                                         plan.layout, plan.trailing_nulls, privacy_plan)
            if self._privacy is None or privacy_plan is not None:
                self._inference = self._chain.model_inference
        self._close_report: DeliveryReport | None = None
        self._emit("audit_started", ev.PLANS["audit_started"], {}, INFO, self._user, now=self._start)

    # -- the write path: validate -> enrich -> encode -> hash-chain -> emit ---------------------

    def _emit(
        self,
        event_type: str,
        plan: PayloadPlan,
        values: dict[str, Any],
        level: int,
        user: str | None,
        *,
        subject: str | None = None,
        now: int | None = None,
        closing: bool = False,
        where: str = "AuditTrail",
    ) -> str:
        privacy = self._privacy
        if privacy is not None:  # Protector.protect inlined: one frame less per event
            user = (privacy.steps.get(event_type) or privacy.step(event_type, tuple(values)))(values, user, subject)
        with self._lock:
            chain = self._chain
            if chain.closed:
                raise AuditClosedError(
                    f"audit trail {self.operation_name!r} ({self.operation_id}) is closed; "
                    "create a new AuditTrail for further events"
                )
            if closing:
                values = {**values, "event_count": chain.seq + 1}
            event_id = chain.append(_TYPE_BYTES.get(event_type) or encode_string(event_type), level, user,
                                    plan.encode(values), now, closing)
            if type(event_id) is int:
                raise _oversized(event_id, values, where)
            return event_id  # type: ignore[no-any-return]

    def _log(
        self,
        event_type: str,
        values: dict[str, Any],
        level: int | str | None,
        default_level: int,
        user: str | None,
        where: str,
        subject: str | None = None,
    ) -> str | None:
        resolved = default_level if level is None else ev.level(level, "level", where)
        subject = ev.optional_text(subject, "subject", where)
        if resolved < self._log_level:
            return None
        return self._emit(event_type, ev.PLANS[event_type], values, resolved, self._user if user is None else user,
                          subject=subject, where=where)

    # -- the user guide's logging calls ---------------------------------------------------------

    def log_data_access(
        self,
        dataset_name: str,
        columns_accessed: Sequence[str],
        num_records: int,
        purpose: str | None,
        user: str | None = None,
        *,
        level: int | str | None = None,
        subject: str | None = None,
    ) -> str | None:
        """Record that records of a dataset were read, which columns, how many, and why.

        Returns the event id, or None when ``level`` is below the trail's ``log_level``.
        A ``purpose`` of None is recorded as missing (and flagged by the alerting rules).
        """
        w = "log_data_access"
        values = {
            "dataset_name": ev.text(dataset_name, "dataset_name", w),
            "columns_accessed": ev.text_list(columns_accessed, "columns_accessed", w),
            "num_records": ev.count(num_records, "num_records", w),
            "purpose": ev.optional_text(purpose, "purpose", w),
        }
        return self._log("data_access", values, level, INFO, ev.optional_text(user, "user", w), w, subject)

    def log_data_transformation(
        self,
        transformation_type: str,
        input_data: str,
        output_data: str,
        parameters: dict[str, Any] | None,
        *,
        user: str | None = None,
        level: int | str | None = None,
        subject: str | None = None,
    ) -> str | None:
        """Record a transformation (anonymisation, encryption, ...) from one dataset to another."""
        w = "log_data_transformation"
        values = {
            "transformation_type": ev.text(transformation_type, "transformation_type", w),
            "input_data": ev.text(input_data, "input_data", w),
            "output_data": ev.text(output_data, "output_data", w),
            "parameters": ev.json_object(parameters, "parameters", w),
        }
        return self._log("data_transformation", values, level, INFO, ev.optional_text(user, "user", w), w, subject)

    def log_model_training(
        self,
        model_type: str,
        dataset_name: str,
        parameters: dict[str, Any] | None,
        metrics: dict[str, Any] | None = None,
        privacy_parameters: dict[str, Any] | None = None,
        *,
        user: str | None = None,
        level: int | str | None = None,
        subject: str | None = None,
    ) -> str | None:
        """Record a model trained on a dataset, with its parameters, metrics and privacy budget."""
        w = "log_model_training"
        values = {
            "model_type": ev.text(model_type, "model_type", w),
            "dataset_name": ev.text(dataset_name, "dataset_name", w),
            "parameters": ev.json_object(parameters, "parameters", w),
            "metrics": ev.json_object(metrics, "metrics", w),
            "privacy_parameters": ev.json_object(privacy_parameters, "privacy_parameters", w),
        }
        return self._log("model_training", values, level, INFO, ev.optional_text(user, "user", w), w, subject)

    def log_model_inference(
        self,
        model_id: str,
        input_data: str,
        output: Any,
        confidence: float | None = None,
        *,
        user: str | None = None,
        level: int | str | None = None,
        subject: str | None = None,
    ) -> str | None:
        """Record one prediction: which model, an identifier of the input, the output, the confidence.

        ``input_data`` is a description or identifier of the input, not the raw features.
        """
        inference = self._inference
        if inference is not None:
            with self._lock:
                event_id = inference(model_id, input_data, output, confidence, user, level, subject)
            if event_id is not False:
                return event_id  # type: ignore[return-value]
        w = "log_model_inference"
        values = {
            "model_id": ev.text(model_id, "model_id", w),
            "input_data": ev.text(input_data, "input_data", w),
            "output": ev.json_value(output, "output", w),
            "confidence": ev.probability(confidence, "confidence", w),
        }
        return self._log("model_inference", values, level, INFO, ev.optional_text(user, "user", w), w, subject)

    def log_compliance_check(
        self,
        check_type: str,
        regulation: str,
        result: bool,
        details: dict[str, Any] | None,
        *,
        user: str | None = None,
        level: int | str | None = None,
        subject: str | None = None,
    ) -> str | None:
        """Record a compliance check and whether it passed (a failed check is a WARNING)."""
        w = "log_compliance_check"
        passed = ev.boolean(result, "result", w)
        values = {
            "check_type": ev.text(check_type, "check_type", w),
            "regulation": ev.text(regulation, "regulation", w),
            "result": passed,
            "details": ev.json_object(details, "details", w),
        }
        default = INFO if passed else WARNING
        return self._log("compliance_check", values, level, default, ev.optional_text(user, "user", w), w, subject)

    def log_user_request(
        self,
        request_type: str,
        user_id: str,
        details: dict[str, Any] | None,
        status: str,
        *,
        user: str | None = None,
        level: int | str | None = None,
        subject: str | None = None,
    ) -> str | None:
        """Record a data-subject request (GDPR/CCPA access, erasure, ...) and its status."""
        w = "log_user_request"
        values = {
            "request_type": ev.text(request_type, "request_type", w),
            "user_id": ev.text(user_id, "user_id", w),
            "details": ev.json_object(details, "details", w),
            "status": ev.text(status, "status", w),
        }
        return self._log("user_request", values, level, INFO, ev.optional_text(user, "user", w), w, subject)

    def log_error(
        self,
        error_type: str,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        user: str | None = None,
        level: int | str | None = None,
        subject: str | None = None,
    ) -> str | None:
        """Record an error of the operation."""
        w = "log_error"
        values = {
            "error_type": ev.text(error_type, "error_type", w),
            "message": ev.text(str(message)[:_MAX_MESSAGE_CHARS] or "(no message)", "message", w),
            "details": ev.json_object(details, "details", w),
        }
        return self._log("error", values, level, ERROR, ev.optional_text(user, "user", w), w, subject)

    def log_event(
        self,
        event_type: str,
        details: dict[str, Any] | None = None,
        *,
        user: str | None = None,
        level: int | str | None = None,
        subject: str | None = None,
    ) -> str | None:
        """Record an event of a custom type (lower-case name) with free-form ``details``."""
        w = "log_event"
        ev.text(event_type, "event_type", w)
        if event_type in ev.EVENT_FIELDS:
            raise AuditValidationError(
                "event_type", f"{event_type!r} is a built-in type: use its own log_* method", where=w
            )
        if not ev.EVENT_TYPE_PATTERN.match(event_type):
            raise AuditValidationError(
                "event_type", "must be lower case letters, digits, '_', '.', '-' (max 64)", where=w
            )
        resolved = INFO if level is None else ev.level(level, "level", w)
        values = {"details": ev.json_object(details, "details", w)}
        user = ev.optional_text(user, "user", w)
        subject = ev.optional_text(subject, "subject", w)
        if resolved < self._log_level:
            return None
        return self._emit(event_type, ev.CUSTOM_PLAN, values, resolved, self._user if user is None else user,
                          subject=subject, where=w)

    def _log_function(self, event_type: str, values: dict[str, Any]) -> str | None:
        """Record a function_call or function_return event (used by ``audit_function``)."""
        return self._log(event_type, values, None, INFO, None, "audit_function")

    # -- delivery and lifecycle -------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> DeliveryReport:
        """Wait until every event so far is stored (Kafka: acknowledged by all in-sync replicas;
        embedded: fsynced) and report what was sent, stored, failed and is still pending."""
        self._transport.flush(self.config.flush_timeout if timeout is None else timeout)
        return self._tracker.report()

    def close(
        self, status: str = "completed", details: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> DeliveryReport:
        """Record ``audit_closed`` with the event count, then flush.

        Raises AuditDeliveryError when any event of the trail could not be confirmed stored.
        Closing twice returns the first report.
        """
        w = "close"
        values = {"status": ev.text(status, "status", w), "details": ev.json_object(details, "details", w)}
        if self._chain.closed:
            return self._close_report or self._tracker.report()
        level = INFO if status == "completed" else WARNING
        self._emit("audit_closed", ev.PLANS["audit_closed"], values, level, self._user, closing=True, where=w)
        report = self.flush(timeout)
        if report.ok:
            self._transport.release(self._key)
        self._close_report = report
        if not report.ok:
            raise AuditDeliveryError(report)
        return report

    @property
    def log_level(self) -> int:
        """Events below this level are not recorded (fixed for the trail's life: the native path holds it too)."""
        return self._log_level

    @property
    def user(self) -> str | None:
        """The default user of the trail's events (fixed for the trail's life, as ``log_level``)."""
        return self._user

    @property
    def closed(self) -> bool:
        """True once ``audit_closed`` was recorded."""
        return bool(self._chain.closed)

    @property
    def event_count(self) -> int:
        """Events recorded so far (the next ``seq``)."""
        return int(self._chain.seq)

    def __enter__(self) -> AuditTrail:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._chain.closed:
            return
        if exc is None:
            self.close("completed")
            return
        error_type = exc_type.__name__ if exc_type else "Exception"
        try:
            self.log_error(error_type, str(exc) or repr(exc))
            self.close("error", {"error_type": error_type})
        except AuditError as audit_exc:  # keep the caller's exception; say the audit broke too
            exc.add_note(f"secureml-audit could not record this failure: {audit_exc}")

    def __repr__(self) -> str:
        state = "closed" if self._chain.closed else "open"
        return (
            f"AuditTrail({self.operation_name!r}, operation_id={self.operation_id!r}, "
            f"transport={self.config.transport!r}, events={self._chain.seq}, {state})"
        )
