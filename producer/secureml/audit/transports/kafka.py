"""Kafka transport: one message per event, key = operation_id, idempotent, acks=all."""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from secureml.audit.config import AuditConfig
from secureml.audit.exceptions import AuditTransportError
from secureml.audit.schema import SCHEMA_HEADER, SCHEMA_VERSION
from secureml.audit.transports.base import DeliveryTracker, Transport

_HEADERS: list[tuple[str, str | bytes | None]] = [(SCHEMA_HEADER, str(SCHEMA_VERSION).encode())]

# Durability first (acks=all + idempotence: no loss, no duplicates on retry), then throughput.
PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "compression.type": "lz4",
    "linger.ms": 5,
    "batch.num.messages": 10000,
    "queue.buffering.max.messages": 1_000_000,
    "queue.buffering.max.kbytes": 1_048_576,
    "message.timeout.ms": 300_000,
}
# emit() serves delivery reports every this many events (each poll(0) is a C call and a settling pass; the
# reports wait in librdkafka's queue meanwhile, which holds a million).
_POLL_EVERY = 256
# A full local queue means the broker has been unreachable for long: wait this long, then fail.
_QUEUE_FULL_WAIT = 30.0
# The reason of an event librdkafka dropped after a fatal error, until that error is known.
_DROPPED = "the Kafka producer failed for good and dropped the event"
# How long ensure_topic waits for the broker's metadata before it gives up.
_METADATA_WAIT = 15.0
# The topics a broker listed lately, per client settings: a process that ensures several topics (a materializer:
# its topic, the dead letters, the checkpoints) asks once, not once each (an admin client's connection and the
# metadata cost about 50 ms apiece). Kept briefly, so that a topic deleted meanwhile is looked for again.
_LISTED: dict[tuple[tuple[str, str], ...], tuple[float, frozenset[str]]] = {}
_LISTED_FOR = 30.0
# Refusals by the broker's authorizer: the principal lacks an ACL (never cured by retrying).
AUTHORIZATION_ERRORS = frozenset({
    KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED, KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
})

logger = logging.getLogger(__name__)


def principal(config: AuditConfig) -> str:
    """The Kafka principal a configuration authenticates as (``User:ANONYMOUS`` without SASL)."""
    settings = config.librdkafka_settings()
    if "sasl" not in settings.get("security.protocol", "plaintext").lower():
        return "User:ANONYMOUS"
    return f"User:{settings.get('sasl.username', '?')}"


def refused(config: AuditConfig, error: KafkaError, what: str, acl: str) -> str:
    """Explains an authorization refusal: who was refused what, and which ACL would allow it."""
    return (f"Kafka at {config.bootstrap_servers} refused {principal(config)} {what} ({error.name()}): "
            f"the principal lacks an ACL; ask the cluster's operator to grant it {acl} "
            "(kafka-acls --add --allow-principal ...; see README: Kafka security)")


def unauthenticated(config: AuditConfig, error: KafkaError) -> str:
    """Explains a failed SASL/TLS handshake with the broker."""
    settings = config.librdkafka_settings()
    return (f"Kafka at {config.bootstrap_servers} refused the connection of {principal(config)} "
            f"(security.protocol={settings.get('security.protocol', 'plaintext')}, "
            f"sasl.mechanisms={settings.get('sasl.mechanisms', '-')}): {error.str()}. Check sasl.username and "
            "sasl.password (SECUREML_AUDIT_KAFKA_SASL_USERNAME/_PASSWORD) and ssl.ca.location")


def ensure_topic(config: AuditConfig, topic: str | None = None, *, partitions: int | None = None,
                 topic_config: dict[str, str] | None = None) -> None:
    """Create the topic if it is missing (infinite retention, never compacted; or ``topic_config``).

    A topic the principal may not DESCRIBE looks missing; creating it then needs CREATE, and the
    refusal says so. A broker refusing the credentials fails at once, not after the wait.
    """
    name = topic or config.topic
    problems: list[KafkaError] = []
    settings: dict[str, Any] = {"bootstrap.servers": config.bootstrap_servers or "", **config.librdkafka_settings()}
    client = tuple(sorted((key, str(value)) for key, value in settings.items()))
    listed = _LISTED.get(client)
    if listed is not None and time.monotonic() - listed[0] < _LISTED_FOR and name in listed[1]:
        return
    admin = AdminClient({**settings, "error_cb": problems.append})
    deadline = time.monotonic() + _METADATA_WAIT
    while True:
        try:
            existing = admin.list_topics(timeout=min(1.0, max(0.1, deadline - time.monotonic()))).topics
            break
        except KafkaException as exc:
            admin.poll(0)  # serves error_cb
            failed = next((e for e in problems if e.code() == KafkaError._AUTHENTICATION), None)
            if failed is not None:
                raise AuditTransportError(unauthenticated(config, failed)) from exc
            if time.monotonic() < deadline:
                continue
            last = f" (last error: {problems[-1].str()})" if problems else ""
            raise AuditTransportError(
                f"cannot reach Kafka at {config.bootstrap_servers} within {_METADATA_WAIT:.0f}s: {exc}{last}. Start "
                "a broker (scripts/kafka-local start); for a TLS/SASL listener, which drops plaintext and anonymous "
                "clients, check security.protocol, sasl.username/sasl.password and ssl.ca.location; or unset "
                "SECUREML_AUDIT_BOOTSTRAP_SERVERS for the embedded log."
            ) from exc
    listed_at = time.monotonic()
    _LISTED[client] = (listed_at, frozenset(existing))
    if name in existing:
        return
    new = NewTopic(
        name,
        num_partitions=partitions or config.partitions,
        replication_factor=config.replication_factor,
        config=topic_config or {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"},
    )
    for future in admin.create_topics([new], operation_timeout=15).values():
        try:
            future.result()
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() in AUTHORIZATION_ERRORS:
                raise AuditTransportError(refused(
                    config, error, f"creating the missing topic {name!r}",
                    f"CREATE on topic {name!r}, or create the topic as an admin and grant it DESCRIBE and "
                    f"WRITE (producer) or READ (consumer) on {name!r}")) from exc
            if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise AuditTransportError(f"cannot create Kafka topic {name!r}: {exc}") from exc
    _LISTED[client] = (listed_at, frozenset(existing) | {name})


class Refusals:
    """Why a producer's sends fail for good, in words that name the principal and the ACL to grant.

    One of these serves each producer that talks to a broker under ACLs (the audit transport, the
    checkpoint publisher, the alerts record). librdkafka raises a fatal error from poll()/flush()
    once and, with that exception pending, runs the next delivery callback: so callbacks only note
    their report, and reports are counted after poll()/flush() returned.
    """

    def __init__(self, config: AuditConfig, topic: str) -> None:
        self.config = config
        self.topic = topic
        self.reason: str | None = None  # set once the broker refused this producer for good
        self.purge_due = False

    def explain(self, err: KafkaError) -> str:
        """Why a send failed, saying what to do when the broker refused this principal."""
        code = err.code()
        if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            return refused(self.config, err, f"writing to topic {self.topic!r}", f"WRITE on topic {self.topic!r}")
        if code == KafkaError.CLUSTER_AUTHORIZATION_FAILED:
            return refused(self.config, err, "an idempotent producer id (it may write to no topic)",
                           f"WRITE on topic {self.topic!r}")
        if err.fatal() or code in (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT, KafkaError._FATAL):
            # librdkafka may report these before poll()/flush() raise the fatal error that explains them.
            return self.reason or _DROPPED
        return f"{err.name()}: {err.str()}"

    def on_error(self, err: KafkaError, producer: Producer | None = None) -> None:
        """The producer's error_cb: refused credentials fail the queued sends now, with the reason
        (they do not heal by retrying), rather than after message.timeout.ms. Without the producer
        at hand, ``purge_due`` asks its owner to purge at its next call."""
        if err.code() == KafkaError._AUTHENTICATION:
            self.reason = unauthenticated(self.config, err)
            if producer is None:
                self.purge_due = True
            else:
                producer.purge(in_queue=True, in_flight=True, blocking=False)
        elif err.fatal():
            self.fatal(err)
        else:
            logger.debug("Kafka producer for %s: %s", self.topic, err.str())

    def fatal(self, err: KafkaError) -> str:
        """The producer is unusable from now on (e.g. its idempotent producer id was refused): why."""
        reason = self.reason = self.explain(err)
        logger.error("the Kafka producer for %s failed for good: %s", self.topic, reason)
        return reason

    def raised(self, exc: KafkaException | SystemError) -> str:
        """Note the fatal error that poll()/flush() raise once and return the reason.

        confluent-kafka calls the next delivery callback with that exception still pending, which
        turns the callback's first call into a SystemError caused by it, raised here. When the
        logging of the FATAL line swallows the exception instead, flush() fails "without setting an
        exception" and the reason is inferred. Anything else is raised again.
        """
        cause = exc if isinstance(exc, KafkaException) else exc.__cause__
        if isinstance(cause, KafkaException):
            return self.fatal(cause.args[0])
        if self.reason is not None:  # flush() then fails "without setting an exception": already noted
            return self.reason
        if "without setting an exception" in str(exc):
            reason = self.reason = (
                f"the Kafka producer for topic {self.topic!r} failed for good (librdkafka's fatal error is logged "
                f"as FATAL by {__name__}); under ACLs that is usually {principal(self.config)} refused an idempotent "
                f"producer id (CLUSTER_AUTHORIZATION_FAILED) because it may write to no topic: ask the cluster's "
                f"operator to grant it WRITE on topic {self.topic!r}")
            logger.error("%s", reason)
            return reason
        raise exc

    def refused_at_send(self, exc: KafkaException, what: str = "message") -> str:
        """Why produce() itself refused a message (too large, or after the producer failed for good)."""
        error = exc.args[0]
        if self.reason is None and error.code() not in AUTHORIZATION_ERRORS:
            return f"the Kafka producer refused the {what}: {exc}"
        return self.explain(error)


@dataclass
class Confirmation:
    """What a ConfirmedProducer's confirm() saw: the messages delivered, the failures, the unconfirmed."""

    delivered: list[Any] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    pending: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures and not self.pending


class ConfirmedProducer:
    """A producer for a side topic (checkpoints, alerts) whose sends are confirmed as a group.

    ``send`` queues a message; ``confirm`` waits, bounded, and says which were delivered and why
    the others failed. Delivery reports are noted by the callback and counted after flush()
    returns; a fatal error or an ACL refusal becomes a reason naming the principal and the ACL
    (``Refusals``), and once the producer failed for good, later sends fail at once with it.
    """

    def __init__(self, config: AuditConfig, topic: str, **overrides: Any) -> None:
        self.topic = topic
        self.refusals = refusals = Refusals(config, topic)
        self._reports: deque[tuple[KafkaError | None, Any]] = deque()
        self._early: list[str] = []  # sends refused by produce() itself
        self._sent = 0
        reports = self._reports
        # The callbacks hold neither this object nor the producer: no reference cycle, so a producer
        # dropped without close() is freed at once instead of reconnecting until the collector runs.
        self._on_delivery: Callable[[KafkaError | None, Any], None] = lambda err, msg: reports.append((err, msg))
        self._producer = Producer({
            **PRODUCER_DEFAULTS, "bootstrap.servers": config.bootstrap_servers, **overrides,
            **config.librdkafka_settings(),
            "error_cb": refusals.on_error, "logger": logger,
        })

    def _purge_if_due(self) -> None:
        if self.refusals.purge_due:
            self.refusals.purge_due = False
            self._producer.purge(in_queue=True, in_flight=True, blocking=False)

    def send(self, value: bytes, key: bytes, headers: list[tuple[str, str | bytes | None]] | None = None) -> None:
        """Queue one message; a refusal by produce() itself is reported by the next confirm()."""
        self._sent += 1
        self._purge_if_due()
        try:
            self._producer.produce(self.topic, value, key, headers=headers, on_delivery=self._on_delivery)
        except BufferError:
            self._early.append("the Kafka producer's local queue is full: the broker is not taking messages")
        except KafkaException as exc:
            self._early.append(self.refusals.refused_at_send(exc))

    def confirm(self, timeout: float) -> Confirmation:
        """Wait up to ``timeout`` seconds for every message sent since the last call."""
        result = Confirmation(failures=self._early)
        self._early = []
        if self.refusals.reason is not None:  # failed for good: waiting would only time out
            timeout = min(timeout, 1.0)
        deadline = time.monotonic() + timeout
        remaining = 1
        while remaining:
            self._purge_if_due()  # credentials refused meanwhile: fail what waits now, with the reason
            try:
                # In slices, so that a refusal noted by error_cb ends the wait.
                remaining = int(self._producer.flush(min(0.5, max(0.0, deadline - time.monotonic()))))
            except (KafkaException, SystemError) as exc:
                self.refusals.raised(exc)
                deadline = min(deadline, time.monotonic() + 1.0)
            if time.monotonic() >= deadline:
                break
        while self._reports:
            err, msg = self._reports.popleft()
            if err is None:
                result.delivered.append(msg)
            else:
                result.failures.append(self.refusals.explain(err))
        result.pending = max(0, self._sent - len(result.delivered) - len(result.failures))
        if remaining and not result.pending:
            logger.debug("%d message(s) still queued for %s without a report", remaining, self.topic)
        if result.pending and self.refusals.reason is not None:
            # Dropped by librdkafka after the fatal error without a report: they failed, for that reason.
            result.failures += [self.refusals.reason] * result.pending
            result.pending = 0
        result.failures = [self.refusals.reason if f == _DROPPED and self.refusals.reason else f
                           for f in result.failures]
        self._sent = 0
        return result

    def close(self, timeout: float = 5.0) -> None:
        """Wait briefly for what is queued, then release the handle (once)."""
        producer = self.__dict__.pop("_producer", None)
        if producer is not None:
            with contextlib.suppress(KafkaException, SystemError):  # failed for good: nothing left to deliver
                producer.flush(timeout)


class KafkaTransport(Transport):
    """Publishes events with confluent-kafka; delivery reports count every success and failure.

    One delivery callback serves the whole producer and finds the trail's tracker by message
    key (the operation_id), which is cheaper than a closure per message on the hot path.
    """

    def __init__(self, config: AuditConfig, *, create_topic: bool = True) -> None:
        """``create_topic=False`` skips checking for the topic and creating it, for clusters
        where operators provision topics and clients may not list or create them."""
        self.config = config
        if create_topic:
            ensure_topic(config)
        settings = {
            **PRODUCER_DEFAULTS,
            "bootstrap.servers": config.bootstrap_servers,
            **config.librdkafka_settings(),
            "on_delivery": self._on_delivery,
            "error_cb": self._on_error,
            "logger": logger,  # librdkafka's own diagnostics go to logging, not straight to stderr
        }
        # Why the broker refused this producer for good (credentials, ACLs), once it did: the reason
        # every event failed since, instead of librdkafka's bare purge or fatal code.
        self._refusals = Refusals(config, config.topic)
        self._reports: deque[tuple[KafkaError | None, Any]] = deque()
        self._producer = Producer(settings)
        self._produce = self._producer.produce
        self._poll = self._producer.poll
        self._topic = config.topic
        self._trackers: dict[bytes, DeliveryTracker] = {}
        self._unpolled = 0
        self._closed = False

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        # Only note the report; _settle counts it once poll()/flush() returned. After a fatal error
        # confluent-kafka runs this with its exception pending, when every C call in here raises
        # SystemError after taking effect (a tracker's lock would stay held): one append is safe.
        self._reports.append((err, msg))

    def _settle(self) -> None:
        """Count the delivery reports noted since the last call in their trails' trackers."""
        reports = self._reports
        trackers = self._trackers
        delivered: dict[bytes, int] = {}  # counted per trail, one tracker update per poll
        while reports:
            err, msg = reports.popleft()
            key = msg.key()
            if err is None:
                delivered[key] = delivered.get(key, 0) + 1
                continue
            tracker = trackers.get(key)
            if tracker is not None:
                tracker.on_failed(self._refusals.explain(err))
        for key, count in delivered.items():
            tracker = trackers.get(key)
            if tracker is not None:
                tracker.on_delivered(count)

    def _on_error(self, err: KafkaError) -> None:
        self._refusals.on_error(err, self._producer)

    def _raised(self, exc: KafkaException | SystemError) -> None:
        """Note the fatal error poll()/flush() raise once (see Refusals.raised) and give its reason
        to the events dropped before it was known."""
        reason = self._refusals.raised(exc)
        for tracker in self._trackers.values():
            tracker.errors[:] = [reason if e == _DROPPED else e for e in tracker.errors]

    def _serve(self, timeout: float) -> None:
        """Serve delivery reports; librdkafka raises its fatal error from here once."""
        try:
            self._poll(timeout)
        except (KafkaException, SystemError) as exc:
            self._raised(exc)
        finally:
            self._settle()

    def emit(self, key: bytes, value: bytes, tracker: DeliveryTracker) -> None:
        if self._closed:
            raise self._closed_error()
        self._trackers[key] = tracker
        tracker.sent += 1
        try:
            self._produce(self._topic, value, key, headers=_HEADERS)
        except BufferError:
            self._wait_for_room(key, value, tracker)
        except KafkaException as exc:  # refused before sending (e.g. larger than message.max.bytes)
            tracker.on_failed(self._refusals.refused_at_send(exc, "event"))
            return
        self._unpolled += 1
        if self._unpolled >= _POLL_EVERY:  # serve delivery reports now and then, not on every call
            self._unpolled = 0
            self._serve(0)

    def _wait_for_room(self, key: bytes, value: bytes, tracker: DeliveryTracker) -> None:
        """The local queue is full (broker away for long): serve reports until there is room, bounded."""
        deadline = time.monotonic() + _QUEUE_FULL_WAIT
        while True:
            self._serve(0.05)
            try:
                self._produce(self._topic, value, key, headers=_HEADERS)
                return
            except BufferError:
                if time.monotonic() > deadline:
                    tracker.sent -= 1
                    raise AuditTransportError(
                        f"Kafka producer queue stayed full for {_QUEUE_FULL_WAIT:.0f}s: the broker at "
                        f"{self.config.bootstrap_servers} is not taking events. Check the broker."
                    ) from None

    def flush(self, timeout: float) -> None:
        if not self._closed:  # a closed transport's producer is gone: nothing left to wait for
            self._flush(timeout)

    def _flush(self, timeout: float) -> int:
        """flush() that turns librdkafka's one-time fatal exception into failed events, bounded."""
        deadline = time.monotonic() + timeout
        try:
            return int(self._producer.flush(timeout))
        except (KafkaException, SystemError) as exc:
            self._raised(exc)
            return int(self._producer.flush(max(0.0, deadline - time.monotonic())))
        finally:
            self._settle()

    def release(self, key: bytes) -> None:
        self._trackers.pop(key, None)

    def close(self, timeout: float) -> None:
        if self._closed:
            return
        self._closed = True
        remaining = self._flush(timeout)
        if remaining:
            logger.warning(
                "%d audit event(s) were not confirmed by Kafka at %s within %.0fs of closing the transport; "
                "they stay pending in their trails' delivery reports",
                remaining, self.config.bootstrap_servers, timeout,
            )
        # Dropping the last references destroys the librdkafka handle, which ends its threads and
        # connections (Producer.close() would do it too, but waits for every unconfirmed event).
        del self._producer, self._produce, self._poll

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return f"KafkaTransport({self.config.bootstrap_servers!r}, topic={self._topic!r})"
