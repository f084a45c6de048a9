"""Restarts: rule state and positions survive, and the alerts record gets each alert exactly once."""

from __future__ import annotations

import shutil
import stat
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from support.alerting import MovableClock, make_alerter, published

from conftest import Harness
from secureml.audit import AuditTrail

# Bulk alerts in tumbling windows and the budget alert are named by user/window and dataset, so
# every run gets the same ids whichever partition it reads first.
RULES = """
rules:
  bulk_access: {threshold: 2000, window: 1h, mode: tumbling}
  privacy_budget_exceeded: {budget: 10}
"""


def log_operations(harness: Harness, first: int, count: int, pause: float = 0.0) -> None:
    """Operations with a mix of violations: no purpose, sensitive columns, failed checks, unprotected training."""
    for i in range(first, first + count):
        with AuditTrail(f"job-{i % 5}", **harness.options(), user=f"user-{i % 3}", regulations=["GDPR"],
                        context={"role": "analyst"}) as t:
            t.log_data_access("customers", ["age", "ssn" if i % 3 == 0 else "zip"], 300,
                              None if i % 4 == 0 else "churn model")
            t.log_model_inference("churn-v1", f"request-{i}", "stay", 0.9)
            t.log_compliance_check("consent_recorded", "GDPR", i % 5 != 0, {"batch": i})
            if i % 6 == 0:
                t.log_data_transformation("anonymization", "customers", "customers_anon", None)
                t.log_model_training("logreg", "customers_anon", None, None, {"epsilon": 3})
            elif i % 6 == 3:
                t.log_model_training("logreg", f"raw-{i}", None, None, None)
        if pause:
            time.sleep(pause)


def alert_ids(harness: Harness, **where: object) -> list[str]:
    """Ids on the alerts record, in order, duplicates kept."""
    return [a.alert_id for a in published(harness, **where)]  # type: ignore[arg-type]


def baseline_ids(harness: Harness, tmp_path: Path) -> set[str]:
    """The alert ids of one uninterrupted run over the whole log (its own state and alerts record)."""
    log_dir = tmp_path / "baseline"
    if harness.kind == "embedded":
        shutil.copytree(harness.log_dir / "log", log_dir / "log")
    topic = f"{harness.topic}-baseline"
    make_alerter(harness, RULES, clock=MovableClock(60), topic=topic, log_dir=log_dir).run(once=True)
    ids = alert_ids(harness, topic=topic, log_dir=log_dir)
    assert len(ids) == len(set(ids))
    return set(ids)


@pytest.mark.kafka
def test_restart_mid_stream_neither_repeats_nor_loses(kafka: Harness, tmp_path: Path) -> None:
    """An alerter stopped while events flow and a new one started after: the same alert ids as one run, each once."""
    producer = threading.Thread(target=log_operations, args=(kafka, 0, 60, 0.05))
    producer.start()
    first = make_alerter(kafka, RULES, clock=MovableClock(60))
    stop = threading.Event()
    runner = threading.Thread(target=first.run, kwargs={"stop": stop})
    runner.start()
    time.sleep(2.0)
    stop.set()
    runner.join(30)
    producer.join()
    second = make_alerter(kafka, RULES, clock=MovableClock(60)).run(once=True)
    ids = alert_ids(kafka)
    assert 0 < first.stats.alerts < len(ids), "the first alerter was not stopped mid-stream"
    assert first.stats.alerts + second.alerts == len(ids)
    assert [i for i, n in Counter(ids).items() if n > 1] == []
    assert set(ids) == baseline_ids(kafka, tmp_path)


def test_crash_before_checkpoint_publishes_nothing_twice(harness: Harness, tmp_path: Path) -> None:
    """Alerts published after the last checkpoint are regenerated on restart and skipped, not published again."""
    state = harness.log_dir / "alerts" / "state.json"
    log_operations(harness, 0, 12)
    make_alerter(harness, RULES, clock=MovableClock(60)).run(once=True)
    saved = tmp_path / "state-after-part-1.json"
    shutil.copy(state, saved)
    log_operations(harness, 12, 12)
    second = make_alerter(harness, RULES, clock=MovableClock(60)).run(once=True)
    assert second.alerts > 0
    shutil.copy(saved, state)  # as if the process died after publishing part 2, before its checkpoint
    replay = make_alerter(harness, RULES, clock=MovableClock(60)).run(once=True)
    assert (replay.alerts, replay.already_published) == (0, second.alerts)
    ids = alert_ids(harness)
    assert len(ids) == len(set(ids))
    assert set(ids) == baseline_ids(harness, tmp_path)
    rules = {a.rule_id for a in published(harness)}
    assert {"bulk_access", "privacy_budget_exceeded", "training_on_unprotected_data"} <= rules


def test_rule_state_survives_a_restart(harness: Harness) -> None:
    """A bulk-access window and a privacy budget add up across two runs of the alerter."""
    rules = """
rules:
  bulk_access: {threshold: 500}
  privacy_budget_exceeded: {budget: 5}
  access_outside_hours: {enabled: false}
"""
    with AuditTrail("a", **harness.options(), user="ann") as t:
        t.log_data_access("customers", ["age"], 300, "churn")
        t.log_data_transformation("anonymization", "raw", "anon", None)
        t.log_model_training("logreg", "anon", None, None, {"epsilon": 3})
    assert make_alerter(harness, rules).run(once=True).alerts == 0
    with AuditTrail("b", **harness.options(), user="ann") as t:
        t.log_data_access("customers", ["age"], 300, "churn")
        t.log_model_training("logreg", "anon", None, None, {"epsilon": 3})
    assert make_alerter(harness, rules).run(once=True).alerts == 2
    alerts = {a.rule_id: a for a in published(harness)}
    assert alerts["bulk_access"].details["total_records"] == 600
    assert alerts["privacy_budget_exceeded"].details["epsilon_spent"] == 6


def test_state_and_alerts_files_are_owner_only(embedded: Harness) -> None:
    """state.json and the embedded alerts file are readable by their owner only."""
    with AuditTrail("a", **embedded.options(), user="ann") as t:
        t.log_data_access("customers", ["age"], 3, None)
    make_alerter(embedded).run(once=True)
    for name in ("state.json", "alerts.jsonl"):
        mode = stat.S_IMODE((embedded.log_dir / "alerts" / name).stat().st_mode)
        assert mode == 0o600, (name, oct(mode))
    assert stat.S_IMODE((embedded.log_dir / "alerts").stat().st_mode) == 0o700


def test_a_second_alerter_on_the_same_state_is_refused(embedded: Harness) -> None:
    """Two alerters cannot share one state file: the second is told to use its own log_dir."""
    from secureml.alerting import AlertStateError

    stop = threading.Event()
    first = make_alerter(embedded)
    runner = threading.Thread(target=first.run, kwargs={"stop": stop})
    runner.start()
    try:
        time.sleep(0.5)
        with pytest.raises(AlertStateError, match="another alerter is running"):
            make_alerter(embedded).run(once=True)
    finally:
        stop.set()
        runner.join(10)


def test_background_checkpoint_is_the_state_when_saved_and_its_failure_is_raised(tmp_path: Path) -> None:
    """A checkpoint written by a thread holds the state as it was at save(); a failed write surfaces at wait()."""
    from secureml.alerting import AlertStateError
    from secureml.alerting.state import StateStore

    store = StateStore(tmp_path / "alerts")
    try:
        state = {"positions": {"t/0": 5}}
        store.save(state, background=True)
        state["positions"]["t/0"] = 9  # the rules go on changing their state at once
        store.wait()
        assert store.load() == {"format": 1, "positions": {"t/0": 5}}
        store.path.unlink()
        store.path.mkdir()  # the rename over it now fails
        store.save(state, background=True)
        with pytest.raises(AlertStateError, match="cannot write"):
            store.wait()
    finally:
        store.close()
