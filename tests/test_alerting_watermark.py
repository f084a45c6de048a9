"""The event-time watermark across partitions, and the lineage rule that waits for it (units, then a real broker)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, TopicPartition
from support.alerting import MovableClock, make_alerter, published

from conftest import Harness
from secureml.alerting.watermark import NEVER, Watermarks
from secureml.audit import AuditTrail

S = 1_000_000  # micros per second


class ManualClock:
    """A clock that only moves when told (UTC micros)."""

    def __init__(self, now: int = 1_000 * S) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def test_watermark_is_the_least_partition_time_over_every_listed_partition() -> None:
    """Listed partitions with nothing read hold the watermark back; then it is the least newest time minus 1 µs."""
    clock = ManualClock()
    marks = Watermarks(clock, lambda: ["t/0", "t/1"])
    marks.observe("t/0", 500 * S)
    assert marks.watermark(1.0) == NEVER
    marks.observe("t/1", 400 * S)
    assert marks.watermark(1.0) == 400 * S - 1
    marks.observe("t/1", 300 * S)  # an older batch does not move a partition back
    marks.observe("t/1", 600 * S)
    assert marks.watermark(1.0) == 500 * S - 1


def test_a_silent_partition_counts_as_idle_only_after_the_timeout_once_caught_up() -> None:
    """Before catch-up silence means nothing; after it a partition silent for idle_timeout counts as clock - timeout."""
    clock = ManualClock()
    marks = Watermarks(clock, lambda: ["t/0", "t/1"])
    marks.observe("t/0", clock.now)
    clock.now += 10 * S
    assert marks.watermark(2.0) == NEVER  # still reading what the log held at start: t/1 may have a backlog
    marks.caught_up()
    clock.now += 2 * S - 1
    assert marks.watermark(2.0) == NEVER  # t/1 not yet silent for 2 s since catch-up
    marks.observe("t/0", clock.now - 5 * S)  # t/0 keeps talking (its events run 5 s behind the clock)
    clock.now += 1
    assert marks.watermark(2.0) == clock.now - 5 * S - 2  # t/0's own time: t/1 is idle and counts as now - 2 s
    clock.now += 60 * S
    marks.observe("t/1", clock.now - 30 * S)  # t/1 speaks again; t/0 is silent now, so idle
    assert marks.watermark(2.0) == clock.now - 30 * S - 1


def test_a_partition_found_while_live_waits_its_idle_timeout_and_a_final_run_counts_all_as_idle() -> None:
    """A partition added later holds the watermark for idle_timeout; --once ends with every partition idle."""
    clock = ManualClock()
    listed = ["t/0"]
    marks = Watermarks(clock, lambda: listed)
    marks.observe("t/0", clock.now)
    marks.caught_up()
    clock.now += S
    assert marks.watermark(5.0) == clock.now - S - 1
    listed.append("t/1")
    time.sleep(0.6)  # partitions are listed at most twice a second
    assert marks.watermark(5.0) == NEVER
    marks.caught_up(final=True)
    assert marks.watermark(5.0) == clock.now - 5 * S


def high_offsets(kafka: Harness, consumer: Consumer) -> dict[int, int]:
    """The end offset of every partition of the harness's topic."""
    partitions = consumer.list_topics(kafka.topic, timeout=10).topics[kafka.topic].partitions
    return {p: consumer.get_watermark_offsets(TopicPartition(kafka.topic, p), timeout=10, cached=False)[1]
            for p in partitions}


def log_read(kafka: Harness, consumer: Consumer, name: str) -> int:
    """A compliant three-event trail (started, access, closed); returns the partition it landed on."""
    before = high_offsets(kafka, consumer)
    with AuditTrail(name, **kafka.options(), user="alice") as t:
        t.log_data_access("customers", ["age"], 10, "churn model")
    after = high_offsets(kafka, consumer)
    (partition,) = [p for p in after if after[p] != before.get(p, 0)]
    return partition


def eventually(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.mark.kafka
def test_lineage_fires_once_every_partition_passed_the_training_and_not_before(kafka: Harness) -> None:
    """A training is judged when the last partition passes its time; a silent partition only after idle_timeout."""
    clock = MovableClock()
    rules = "rules: {training_on_unprotected_data: {idle_timeout: 1h}, operation_not_closed: {enabled: false}}"
    alerter = make_alerter(kafka, rules, clock=clock)
    stop = threading.Event()
    runner = threading.Thread(target=alerter.run, kwargs={"stop": stop})
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": "offsets"})
    runner.start()
    try:
        lineage = lambda: [a for a in published(kafka) if a.rule_id == "training_on_unprotected_data"]  # noqa: E731
        logged = 0

        def train(dataset: str) -> tuple[str, int]:
            nonlocal logged
            before = high_offsets(kafka, consumer)
            with AuditTrail("train", **kafka.options(), user="bob") as t:
                t.log_model_training("logreg", dataset, {"c": 1.0})  # seq 1; audit_closed (seq 2) passes it
            after = high_offsets(kafka, consumer)
            logged += 3
            (partition,) = [p for p in after if after[p] != before.get(p, 0)]
            return t.operation_id, partition

        def pass_all_but_one(passed: set[int]) -> int:
            """Log reads until every partition but one has an event after the training; return the one left."""
            nonlocal logged
            while len(passed) < 2:
                passed.add(log_read(kafka, consumer, "reads"))
                logged += 3
            (left,) = {0, 1, 2} - passed
            return left

        operation, partition = train("customers_raw")
        left = pass_all_but_one({partition})
        assert eventually(lambda: alerter.stats.events == logged)
        time.sleep(0.3)  # a few more polls and ticks: nothing may be judged while one partition lags behind
        assert lineage() == []
        while log_read(kafka, consumer, "reads") != left:  # the last partition passes the training's time
            logged += 3
        logged += 3
        assert eventually(lambda: len(lineage()) == 1)
        (alert,) = lineage()
        assert (alert.operation_id, alert.triggers[0].seq, alert.details["dataset_name"]) == (
            operation, 1, "customers_raw")

        second, partition = train("customers_raw_copy")
        left = pass_all_but_one({partition})
        assert eventually(lambda: alerter.stats.events == logged)
        time.sleep(0.3)
        assert len(lineage()) == 1  # partition `left` is silent but not yet for idle_timeout
        clock.advance(3600)
        assert eventually(lambda: len(lineage()) == 2)
        assert {a.operation_id for a in lineage()} == {operation, second}  # alerts of two keys: any order
    finally:
        stop.set()
        runner.join(30)
        consumer.close()


@pytest.mark.kafka
def test_watermarks_survive_a_restart(kafka: Harness) -> None:
    """A restarted alerter keeps each partition's event time: a training read before the restart is judged after it."""
    rules = "rules: {training_on_unprotected_data: {idle_timeout: 1h}, operation_not_closed: {enabled: false}}"
    with AuditTrail("train", **kafka.options(), user="bob") as t:
        t.log_model_training("logreg", "customers_raw", {"c": 1.0})
    clock = MovableClock()
    make_alerter(kafka, rules, clock=clock).run(once=True)  # ends with every partition idle, but not for an hour
    assert published(kafka) == []
    state = (kafka.log_dir / "alerts" / "state.json").read_text()
    assert f'"{kafka.topic}/' in state.split('"watermarks":')[1]
    clock.advance(3600)
    make_alerter(kafka, rules, clock=clock).run(once=True)
    assert [(a.rule_id, a.operation_id) for a in published(kafka)] == [("training_on_unprotected_data", t.operation_id)]


def test_peek_reads_the_type_and_time_the_decoder_reads(embedded: Harness) -> None:
    """Events no rule wants are routed by peek(): the same type and timestamp as a full decode, for every kind."""
    from secureml.alerting.event import peek
    from secureml.audit.transports.embedded import LogRecord, list_segments, read_segment
    from secureml.stream.decode import decode_one

    with AuditTrail("mixed", **embedded.options(), user="ü-ser", context={"role": "analyst"}) as t:
        t.log_model_inference("churn-v1", "request-1", "stay", 0.9)
        t.log_data_access("customers", ["age"], 10, "churn model")
        t.log_data_transformation("anonymization", "raw", "anon", {"k": 5})
        t.log_model_training("logreg", "anon", {"c": 1.0})
        t.log_compliance_check("consent_recorded", "GDPR", True, None)
        t.log_user_request("access", "subject-1", None, "received")
    records = [r for s in list_segments(embedded.log_dir) for r in read_segment(s) if isinstance(r, LogRecord)]
    assert len(records) == 8
    for record in records:
        event = decode_one(record.value, record.version)
        assert peek(record.value, record.version) == (event["event_type"], event["timestamp"])
    assert peek(records[0].value[:12], records[0].version) is None  # cut short: decode it fully instead


def test_embedded_log_a_silent_segment_holds_lineage_until_idle(embedded: Harness) -> None:
    """Embedded: another process's segment that has gone quiet holds a training back until idle_timeout, then not."""
    import subprocess
    import sys

    child = ("import sys\nfrom secureml.audit import AuditTrail\n"
             "with AuditTrail('prepare', log_dir=sys.argv[1], user='svc') as t:\n"
             "    t.log_data_transformation('anonymization', 'raw', 'anon', None)\n")
    subprocess.run([sys.executable, "-c", child, str(embedded.log_dir)], check=True, timeout=120)
    clock = MovableClock()
    rules = "rules: {training_on_unprotected_data: {idle_timeout: 1h}, operation_not_closed: {enabled: false}}"
    alerter = make_alerter(embedded, rules, clock=clock)
    stop = threading.Event()
    runner = threading.Thread(target=alerter.run, kwargs={"stop": stop})
    runner.start()
    try:
        with AuditTrail("train", **embedded.options(), user="bob") as t:
            t.log_model_training("logreg", "anon", {"c": 1.0})  # protected: the other process anonymised it
            t.log_model_training("logreg", "raw", {"c": 1.0})
        assert eventually(lambda: alerter.stats.events == 3 + 4)
        time.sleep(0.3)
        assert published(embedded) == []  # the child's segment is silent, but not for an hour yet
        clock.advance(3600)
        assert eventually(lambda: len(published(embedded)) == 1)
        (alert,) = published(embedded)
        assert (alert.operation_id, alert.triggers[0].seq, alert.details["dataset_name"]) == (t.operation_id, 2, "raw")
    finally:
        stop.set()
        runner.join(30)
