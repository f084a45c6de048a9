"""Precision on a real broker: a big compliant stream raises no alert; one planted violation per rule raises just it."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

import pytest
from support.alerting import MovableClock, make_alerter, published
from support.compliant_stream import (
    DAY,
    NEEDS_ORGANISATION,
    ORGANISATION_RULES,
    ComplianceStream,
    SimulatedTime,
)

from conftest import Harness
from secureml.alerting import BUILTIN_RULES, Alerter
from secureml.audit import trail as trail_module
from secureml.audit.timeutil import now_micros


def found(alerts: list) -> Counter[tuple[str, str, int]]:  # type: ignore[type-arg]
    """Each alert as (rule, operation, seq of its last trigger), counted."""
    return Counter((a.rule_id, a.operation_id, a.triggers[-1].seq) for a in alerts)


@pytest.mark.kafka
def test_compliant_stream_is_silent_and_each_planted_violation_raises_exactly_its_alert(
    kafka: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10,000+ compliant events over weeks (nights, weekends, many users) raise nothing; each violation its alert."""
    simulated = SimulatedTime()
    monkeypatch.setattr(trail_module, "now_micros", simulated)
    stream = ComplianceStream(kafka, simulated)
    now = now_micros()
    stream.write_compliant(start=now - 30 * DAY, days=10)
    assert stream.events >= 10_000, stream.events
    starts = [at for _, at in stream.operations]
    assert len(starts) >= 300 and len({user for user, _ in stream.operations}) >= 15
    assert {at.weekday() for at in starts} == set(range(7)) and {at.hour for at in starts} == set(range(24))
    humans_at_night = [at for user, at in stream.operations if user == "oncall-1" and (at.hour >= 19 or at.hour < 6)]
    assert humans_at_night and any(at.weekday() >= 5 for _, at in stream.operations)

    def alerters() -> tuple[Alerter, Alerter]:
        defaults = make_alerter(kafka, clock=MovableClock())
        organisation = make_alerter(kafka, ORGANISATION_RULES, clock=MovableClock(),
                                    topic=f"{kafka.topic}-org-alerts", log_dir=tmp_path / "org")
        return defaults, organisation

    defaults, organisation = alerters()
    assert defaults.run(once=True).events == stream.events
    assert [a.message for a in published(kafka)] == []
    assert organisation.run(once=True).events == stream.events
    assert [a.message for a in published(kafka, topic=f"{kafka.topic}-org-alerts")] == []

    stream.plant_one_violation_of_each_rule(now)
    assert {p.rule_id for p in stream.planted} == set(BUILTIN_RULES)
    expected = Counter((p.rule_id, p.operation_id, p.seq) for p in stream.planted)
    defaults, organisation = alerters()  # restarted: they resume where the compliant stream ended
    defaults.run(once=True)
    assert found(published(kafka)) == Counter({k: n for k, n in expected.items() if k[0] not in NEEDS_ORGANISATION})
    organisation.run(once=True)
    assert found(published(kafka, topic=f"{kafka.topic}-org-alerts")) == expected


def test_the_user_guides_training_run_raises_nothing_on_a_saturday_night(
    embedded: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guide's example (access with user and purpose, anonymisation, private training) on a Saturday night."""
    from guide import CREATE_AND_LOG

    simulated = SimulatedTime()
    simulated.now = int(dt.datetime(2026, 11, 28, 23, 30, tzinfo=dt.UTC).timestamp() * 1_000_000)  # a Saturday
    monkeypatch.setattr(trail_module, "now_micros", simulated)
    monkeypatch.chdir(tmp_path)
    exec(CREATE_AND_LOG, {})  # the guide's text, verbatim
    alerter = Alerter(log_dir="audit_logs/", clock=MovableClock())
    stats = alerter.run(once=True)
    assert (stats.events, stats.alerts) == (8, 0)
    assert not (tmp_path / "audit_logs" / "alerts" / "alerts.jsonl").exists()
