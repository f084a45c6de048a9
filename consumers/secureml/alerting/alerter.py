"""The alerting loop: read events, run the rules, deliver alerts, checkpoint, repeat.

Each turn polls the source (Kafka in consumer group ``secureml-audit-alerter``, or the
embedded log), decodes the events, gives each to the rules that want its type (in time
order) after advancing the per-partition event-time watermarks (``watermark.py``), ticks
the timers once the log is caught up, then delivers the turn's alerts (sinks
first, then the alerts record), and only after that, at most every ``checkpoint_every`` seconds
and when it stops, saves rule state and log positions in ``log_dir/alerts/state.json`` (the
state is serialised in the loop, then written and fsynced by a thread: an fsync in the loop
would cost more latency than the alerts themselves). After a crash the next run
resumes at that checkpoint; the alerts it regenerates have the same ids, and those already on
the record are skipped.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from secureml.alerting.alert import Alert
from secureml.alerting.config import load_rules
from secureml.alerting.event import Event, peek
from secureml.alerting.exceptions import AlertingError, AlertStateError, RuleConfigError, RuleError
from secureml.alerting.rule import Rule, RuleContext
from secureml.alerting.sinks import Outbox, Sink, outbox_name
from secureml.alerting.state import StateStore
from secureml.alerting.topic import AlertRecord, FileAlertRecord, KafkaAlertRecord
from secureml.alerting.watermark import Watermarks
from secureml.audit.config import AuditConfig, resolve_config
from secureml.audit.privacy import use_keys_of
from secureml.audit.timeutil import now_micros
from secureml.audit.transports.embedded import list_segments
from secureml.stream.accept import accepted_indexes, decoded
from secureml.stream.sources import Batch, EmbeddedSource, Item, Source

log = logging.getLogger(__name__)

DEFAULT_GROUP = "secureml-audit-alerter"
DEFAULT_ALERTS_TOPIC = "audit-alerts"
# How long a --once run waits at its end for slow sinks; what they have not taken by then stays owed.
SINK_DRAIN_SECONDS = 15.0


@dataclass
class AlertStats:
    """What one run did."""

    events: int = 0
    alerts: int = 0
    already_published: int = 0  # regenerated after a restart and skipped
    unreadable: int = 0
    owed: int = 0  # alerts on the record not yet delivered to some sink when the run ended (kept on disk)
    seconds: float = 0.0


class Alerter:
    """Runs rules over the audit event stream and publishes each alert exactly once.

    ``rules`` default to every built-in rule that needs no configuration (see ``load_rules``);
    a rule given here that still needs options is refused with RuleConfigError. With
    ``bootstrap_servers`` (or ``SECUREML_AUDIT_BOOTSTRAP_SERVERS``) it reads Kafka ``topic``
    and publishes Avro alerts to ``alerts_topic``; without, it tails the embedded log of
    ``log_dir`` and appends alerts to ``log_dir/alerts/alerts.jsonl``. ``clock`` gives UTC
    micros for timers (inject one in tests). Run one alerter per log_dir and group: rules
    correlate events across partitions. ``checkpoint_every``: seconds between checkpoints.
    """

    def __init__(
        self,
        rules: Sequence[Rule] | None = None,
        *,
        log_dir: str | os.PathLike[str] | None = None,
        bootstrap_servers: str | None = None,
        topic: str | None = None,
        alerts_topic: str = DEFAULT_ALERTS_TOPIC,
        sinks: Sequence[Sink] = (),
        group: str = DEFAULT_GROUP,
        clock: Callable[[], int] = now_micros,
        poll_timeout: float = 0.005,
        max_batch: int = 5000,
        checkpoint_every: float = 1.0,
        sink_wait: float = SINK_DRAIN_SECONDS,
    ) -> None:
        self.rules = list(load_rules() if rules is None else rules)
        ids = [rule.rule_id for rule in self.rules]
        if len(set(ids)) != len(ids):
            raise AlertingError(f"rule ids must be unique, got {sorted(i for i in ids if ids.count(i) > 1)}")
        for rule in self.rules:
            missing = rule.options.missing()
            if missing:
                raise RuleConfigError(rule.needs(missing), rule=rule.rule_id, field=missing[0].split()[0],
                                      call="Alerter(rules=...)")
        self.config: AuditConfig = resolve_config(log_dir=log_dir, bootstrap_servers=bootstrap_servers, topic=topic)
        use_keys_of(self.config)  # rule settings name users in clear; events hold their pseudonyms
        self.alerts_topic = alerts_topic
        self.sinks = list(sinks)
        self.sink_wait = sink_wait
        self.group = group
        self.clock = clock
        self.poll_timeout = poll_timeout
        self.max_batch = max_batch
        self.checkpoint_every = checkpoint_every
        self.stats = AlertStats()
        self._by_type: dict[str, list[tuple[Rule, RuleContext]]] = {}
        self._for_all: list[tuple[Rule, RuleContext]] = []
        self._wanted: frozenset[str] | None = None  # event types some rule wants (None: every type)
        self._watermarks = Watermarks(clock)
        self._topic_partitions: TopicPartitions | None = None  # Kafka: the topic's partitions, for the watermark

    @property
    def source_name(self) -> str:
        """What the alerter reads, as recorded in its state: ``kafka:<topic>`` or ``embedded``."""
        return f"kafka:{self.config.topic}" if self.config.transport == "kafka" else "embedded"

    def run(self, *, once: bool = False, stop: threading.Event | None = None) -> AlertStats:
        """Alert until ``stop`` is set, or (``once``) until caught up with the log as it was at start."""
        stop = stop or threading.Event()
        began = time.monotonic()
        store = StateStore(self.config.log_dir / "alerts")
        record: AlertRecord | None = None
        outboxes: list[Outbox] = []
        source: Source | None = None
        try:
            state = store.load()
            if state is not None and state.get("source") != self.source_name:
                raise AlertStateError(f"{store.path} belongs to source {state.get('source')!r}, not "
                                      f"{self.source_name!r}: give this alerter its own --log-dir")
            record = self._open_record()
            outboxes = [Outbox(sink, self.config.log_dir / "alerts" / "outbox", outbox_name(sink))
                        for sink in self.sinks]
            published = record.published_since(None if state is None else state["alert_positions"])
            self._watermarks = Watermarks(self.clock, self._partitions,
                                          {} if state is None else state.get("watermarks", {}))
            contexts = self._contexts({} if state is None else state["rules"])
            positions: dict[str, int] = {} if state is None else dict(state["positions"])
            if state is None:  # the first checkpoint notes where the alerts record ends now
                self._checkpoint(store, record, contexts, positions)
            source = self._open_source()
            if self.config.transport == "kafka":
                self._topic_partitions = TopicPartitions(self.config)
            source.start(lambda _sources: dict(positions))
            dirty, saved_at = False, time.monotonic()
            while not stop.is_set():
                batches = source.poll(self.max_batch, self.poll_timeout)
                alerts = self._handle(self._events(batches))
                caught_up = source.caught_up()
                finishing = once and caught_up and not batches
                if caught_up:
                    self._watermarks.caught_up(final=finishing)
                    alerts += self._tick(contexts)
                if batches or alerts:
                    self._deliver(alerts, published, record, outboxes)
                    positions.update((b.source, b.next_position) for b in batches)
                    dirty = True
                if dirty and (finishing or time.monotonic() - saved_at >= self.checkpoint_every):
                    self._checkpoint(store, record, contexts, positions, background=not finishing)
                    source.committed(positions)
                    dirty, saved_at = False, time.monotonic()
                if finishing:
                    break
            if dirty:  # stopped: keep what was delivered
                self._checkpoint(store, record, contexts, positions)
                source.committed(positions)
        finally:
            if self._topic_partitions is not None:
                self._topic_partitions.close()
                self._topic_partitions = None
            if source is not None:
                source.close()
            if record is not None:
                record.close()
            self._close_outboxes(outboxes, self.sink_wait if once else min(self.sink_wait, 1.0))
            store.close()
            self.stats.seconds = time.monotonic() - began
        return self.stats

    def _open_record(self) -> AlertRecord:
        if self.config.transport == "kafka":
            return KafkaAlertRecord(self.config, self.alerts_topic)
        return FileAlertRecord(self.config.log_dir / "alerts")

    def _open_source(self) -> Source:
        if self.config.transport == "kafka":
            from secureml.stream.kafka import KafkaSource

            return KafkaSource(self.config, self.group)
        return EmbeddedSource(self.config.log_dir)

    def _partitions(self) -> Iterable[str]:
        """Every partition of the log as a source name, including those nothing was read from yet."""
        if self._topic_partitions is not None:
            return self._topic_partitions()
        return [f"log/{segment.name}" for segment in list_segments(self.config.log_dir)]

    def _contexts(self, saved: dict[str, dict[str, Any]]) -> dict[str, RuleContext]:
        contexts = {rule.rule_id: RuleContext(rule, saved.get(rule.rule_id, {}), self.clock, self._watermarks)
                    for rule in self.rules}
        self._by_type, self._for_all = {}, []
        for rule in self.rules:
            pair = (rule, contexts[rule.rule_id])
            if rule.event_types is None:
                self._for_all.append(pair)
            else:
                for event_type in rule.event_types:
                    self._by_type.setdefault(event_type, []).append(pair)
        self._wanted = None if self._for_all else frozenset(self._by_type)
        return contexts

    def _events(self, batches: list[Batch]) -> list[Event]:
        """The readable events of the batches that some rule wants, in time order (operations keep their order).

        Events no rule wants are not decoded beyond their type and time, which still advance the
        watermark of their partition.
        """
        events: list[Event] = []
        wanted = self._wanted
        for batch in batches:
            first, skipped = len(events), 0
            newest: int | None = None
            for index in accepted_indexes(batch, self._skip):
                version = batch.versions[index]
                if wanted is not None and version is not None:
                    head = peek(batch.values[index], version)
                    if head is not None and head[0] not in wanted:
                        newest = head[1] if newest is None else max(newest, head[1])
                        skipped += 1
                        continue
                record = decoded(batch.item(index), self._skip)
                if record is not None:
                    events.append(Event(record, batch.source, batch.positions[index]))
            if len(events) > first:
                latest = max(event.timestamp for event in events[first:])
                newest = latest if newest is None else max(newest, latest)
            if newest is not None:
                self._watermarks.observe(batch.source, newest)
            self.stats.events += skipped
        events.sort(key=lambda event: event.timestamp)
        self.stats.events += len(events)
        return events

    def _skip(self, item: Item, reason: str) -> None:
        """Count an unreadable message and say why it is skipped (the materializer dead-letters it)."""
        self.stats.unreadable += 1
        log.warning("alerts: skipped the message at %s@%d: %s", item.source, item.position, reason)

    def _handle(self, events: list[Event]) -> list[Alert]:
        alerts: list[Alert] = []
        for event in events:
            for rule, ctx in self._by_type.get(event.event_type, []) + self._for_all:
                try:
                    alerts += rule.on_event(event, ctx)
                except Exception as exc:
                    raise RuleError(f"rule {rule.rule_id!r} failed on event {event.event_id} at {event.source}@"
                                    f"{event.position}: {exc!r}; fix the rule or disable it in the rules file, "
                                    "then restart (the alerter resumes at this event)") from exc
        return alerts

    def _tick(self, contexts: dict[str, RuleContext]) -> list[Alert]:
        now = self.clock()
        alerts: list[Alert] = []
        for rule in self.rules:
            try:
                alerts += rule.on_tick(now, contexts[rule.rule_id])
            except Exception as exc:
                raise RuleError(f"rule {rule.rule_id!r} failed on its timer: {exc!r}; fix the rule or disable it "
                                "in the rules file, then restart") from exc
        return alerts

    def _deliver(self, alerts: list[Alert], published: set[str], record: AlertRecord, outboxes: list[Outbox]) -> None:
        """Owed to every sink first (durably, without waiting for them), then the record: an alert on
        the record is delivered, or owed on disk, everywhere."""
        fresh = [alert for alert in alerts if alert.alert_id not in published]
        self.stats.already_published += len(alerts) - len(fresh)
        if not fresh:
            return
        for outbox in outboxes:
            outbox.put(fresh)
        for alert in fresh:
            record.add(alert)
        record.flush()
        self.stats.alerts += len(fresh)

    def _close_outboxes(self, outboxes: list[Outbox], wait: float) -> None:
        """Give the sinks up to ``wait`` seconds in all to take what they are owed; the rest stays owed."""
        deadline = time.monotonic() + wait
        for outbox in outboxes:
            left = outbox.drain(max(0.0, deadline - time.monotonic()))
            if left:
                self.stats.owed += left
                log.warning("alert sink %s still owed %d alert(s) (%s): kept in %s, delivered by the next run",
                            outbox.sink.describe(), left, outbox.failure or "slow to answer",
                            self.config.log_dir / "alerts" / "outbox")
            outbox.close()

    def _checkpoint(self, store: StateStore, record: AlertRecord, contexts: dict[str, RuleContext],
                    positions: dict[str, int], *, background: bool = False) -> None:
        rules = {rule_id: ctx.state for rule_id, ctx in contexts.items()}
        state = {"source": self.source_name, "group": self.group, "positions": positions,
                 "alert_positions": record.positions(), "rules": rules,
                 "watermarks": self._watermarks.event_times, "saved_at": self.clock()}
        try:
            store.save(state, background=background)
        except (TypeError, ValueError) as exc:
            raise AlertStateError(f"the state of rule {_unserialisable(rules)!r} is not JSON ({exc}): keep only "
                                  "dicts with str keys, lists, str, numbers, bools and None in ctx.state") from exc


def _unserialisable(rules: dict[str, Any]) -> str:
    for rule_id, state in rules.items():
        try:
            json.dumps(state, allow_nan=False)
        except (TypeError, ValueError):
            return rule_id
    return "?"


class TopicPartitions:
    """The partitions of the events topic as source names, listed now and then every few seconds in the background.

    Listing asks the broker (tens of milliseconds on a busy machine): a thread does it, so the
    alerting loop never waits for it; partitions added to the topic are found within seconds.
    """

    EVERY = 5.0

    def __init__(self, config: AuditConfig) -> None:
        from confluent_kafka.admin import AdminClient

        self._topic = config.topic
        self._admin = AdminClient({"bootstrap.servers": config.bootstrap_servers or "", **config.librdkafka_settings()})
        self._names: list[str] = []
        self._stop = threading.Event()
        self._list()
        self._thread = threading.Thread(target=self._run, name="alerter-partitions", daemon=True)
        self._thread.start()

    def __call__(self) -> list[str]:
        return self._names

    def _list(self) -> None:
        try:
            topic = self._admin.list_topics(self._topic, timeout=5).topics.get(self._topic)
        except Exception as exc:  # noqa: BLE001 - the next listing retries; known partitions still count
            log.warning("alerts: cannot list the partitions of %r: %s", self._topic, exc)
            return
        if topic is not None and topic.error is None:
            self._names = [f"{self._topic}/{p}" for p in sorted(topic.partitions)]

    def _run(self) -> None:
        while not self._stop.wait(self.EVERY):
            self._list()

    def close(self) -> None:
        """Stop listing."""
        self._stop.set()
        self._thread.join(10)
