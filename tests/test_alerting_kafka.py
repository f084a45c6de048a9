"""On a real Kafka broker: every built-in rule fires on a violating stream and stays silent on a compliant one."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable

import pytest
from support.alerting import DAY, MovableClock, make_alerter, pseudonym_of, published, stored_event

from conftest import Harness
from secureml.alerting import BUILTIN_RULES
from secureml.audit import AuditTrail

WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def rules_yaml(*, allow_today: bool = True) -> str:
    """Tight but explicit settings, so that small streams can violate them (hours: today only, or never today)."""
    today = dt.datetime.now(dt.UTC).weekday()
    days = WEEKDAYS if allow_today else [d for i, d in enumerate(WEEKDAYS) if i != today]
    return f"""
rules:
  bulk_access: {{threshold: 1000, window: 1h}}
  sensitive_column_access:
    columns: [ssn, "*_email"]
    allowed_users: [dpo]
    allowed_roles: [fraud_team]
  access_outside_hours: {{start: "00:00", end: "00:00", days: [{", ".join(days)}], timezone: UTC}}
  privacy_budget_exceeded: {{budget: 10}}
  operation_not_closed: {{timeout: 2h}}
"""


def trail(kafka: Harness, name: str = "op", user: str | None = "alice", **context: str) -> AuditTrail:
    """A trail on the test's topic."""
    return AuditTrail(name, **kafka.options(), user=user, regulations=["GDPR"], context=context)


def failed_check(kafka: Harness) -> None:
    with trail(kafka) as t:
        t.log_compliance_check("consent_recorded", "GDPR", False, {"missing": 3})


def no_purpose(kafka: Harness) -> None:
    with trail(kafka) as t:
        t.log_data_access("customers", ["age"], 10, None)


def no_user(kafka: Harness) -> None:
    with trail(kafka, user=None) as t:
        t.log_data_access("customers", ["age"], 10, "churn model")


def bulk(kafka: Harness) -> None:
    for _ in range(2):
        with trail(kafka) as t:
            t.log_data_access("customers", ["age"], 400, "churn model")
            t.log_data_access("customers", ["age"], 300, "churn model")


def sensitive(kafka: Harness) -> None:
    with trail(kafka, user="bob", role="analyst") as t:
        t.log_data_access("customers", ["age", "ssn"], 10, "churn model")


def outside_hours(kafka: Harness) -> None:
    with trail(kafka) as t:
        t.log_data_access("customers", ["age"], 10, "churn model")


def unprotected_training(kafka: Harness) -> None:
    with trail(kafka, "prepare") as t:
        t.log_data_transformation("anonymization", "customers_raw", "customers_anon", {"k": 5})
    with trail(kafka, "train") as t:
        t.log_model_training("random_forest", "customers_raw", {"trees": 10})


def budget(kafka: Harness) -> None:
    with trail(kafka, "prepare") as t:
        t.log_data_transformation("pseudonymisation", "customers_raw", "customers_pseudo", None)
    for epsilon in (4, 4, 4):
        with trail(kafka, "train") as t:
            t.log_model_training("logreg", "customers_pseudo", None, None, {"epsilon": epsilon, "delta": 1e-5})


def late_request(kafka: Harness) -> None:
    with trail(kafka, "requests") as t:
        t.log_user_request("erasure", "subject-7", {"channel": "email"}, "received")


def never_closed(kafka: Harness) -> None:
    t = trail(kafka, "forgotten")
    t.log_data_access("customers", ["age"], 10, "churn model")
    assert t.flush().ok


VIOLATIONS: dict[str, tuple[Callable[[Harness], None], bool]] = {
    "failed_compliance_check": (failed_check, True),
    "access_without_purpose": (no_purpose, True),
    "access_without_user": (no_user, True),
    "bulk_access": (bulk, True),
    "sensitive_column_access": (sensitive, True),
    "access_outside_hours": (outside_hours, False),
    "training_on_unprotected_data": (unprotected_training, True),
    "privacy_budget_exceeded": (budget, True),
    "request_deadline_missed": (late_request, True),
    "operation_not_closed": (never_closed, True),
}


def compliant(kafka: Harness) -> None:
    """Near misses of every rule: everything is allowed, closed, protected, completed, within limits."""
    with trail(kafka, "checks") as t:
        t.log_compliance_check("consent_recorded", "GDPR", True, None)
    with trail(kafka, "reads") as t:
        t.log_data_access("customers", ["age"], 500, "churn model")
        t.log_data_access("customers", ["age"], 500, "churn model")
        t.log_data_access("customers", ["ssn"], 10, "fraud check", user="dpo")
    with trail(kafka, "fraud", user="carol", role="fraud_team") as t:
        t.log_data_access("customers", ["contact_email"], 10, "fraud check")
    with trail(kafka, "prepare") as t:
        t.log_data_transformation("anonymization", "customers_raw", "customers_anon", {"k": 5})
    with trail(kafka, "features") as t:
        t.log_data_transformation("feature_engineering", "customers_anon", "features", None)
    with trail(kafka, "train") as t:
        t.log_model_training("logreg", "customers_anon", None, None, {"epsilon": 3})
        t.log_model_training("logreg", "features", None, None, {"epsilon": 4})
    with trail(kafka, "requests") as t:
        t.log_user_request("erasure", "subject-7", None, "received")
    with trail(kafka, "requests") as t:
        t.log_user_request("erasure", "subject-7", None, "completed")


@pytest.mark.kafka
@pytest.mark.parametrize("rule_id", list(VIOLATIONS))
def test_each_rule_fires_on_its_violation_only(kafka: Harness, rule_id: str) -> None:
    """A stream breaking one rule raises that rule's alert and no other, and its triggers are the stored events."""
    violate, allow_today = VIOLATIONS[rule_id]
    violate(kafka)
    stats = make_alerter(kafka, rules_yaml(allow_today=allow_today), clock=MovableClock(60 * DAY)).run(once=True)
    alerts = published(kafka)
    assert [a.rule_id for a in alerts] == [rule_id], [a.message for a in alerts]
    assert stats.alerts == 1
    alert = alerts[0]
    rule = BUILTIN_RULES[rule_id]
    assert (alert.severity, alert.regulation) == (rule.severity, rule.regulation)
    assert alert.article and alert.message.endswith(".")
    assert alert.operation_id == alert.triggers[-1].operation_id
    for trigger in alert.triggers:
        event = stored_event(kafka, trigger.source, trigger.position)
        assert (event["event_id"], event["operation_id"], event["seq"]) == (
            trigger.event_id, trigger.operation_id, trigger.seq)


def test_every_builtin_rule_has_a_violation_test() -> None:
    """The parametrised violations cover every built-in rule."""
    assert set(VIOLATIONS) == set(BUILTIN_RULES)


@pytest.mark.kafka
def test_compliant_stream_raises_nothing(kafka: Harness) -> None:
    """Near misses of every rule, judged two months later: no alert at all."""
    compliant(kafka)
    stats = make_alerter(kafka, rules_yaml(), clock=MovableClock(60 * DAY)).run(once=True)
    assert stats.events == 27
    assert [a.message for a in published(kafka)] == []


@pytest.mark.kafka
def test_deadline_fires_when_the_clock_passes_it(kafka: Harness) -> None:
    """A running alerter raises GDPR (one month) and CCPA (45 days) deadline alerts as its clock moves, no event."""
    clock = MovableClock()
    alerter = make_alerter(kafka, "rules: {operation_not_closed: {enabled: false}}", clock=clock)
    stop = threading.Event()
    runner = threading.Thread(target=alerter.run, kwargs={"stop": stop})
    runner.start()
    try:
        with trail(kafka, "requests") as t:
            t.log_user_request("access", "subject-1", None, "received")
            t.log_user_request("access", "subject-2", {"regulation": "CCPA"}, "received")
            t.log_user_request("erasure", "subject-3", None, "received")
        with trail(kafka, "requests") as t:
            t.log_user_request("erasure", "subject-3", None, "completed")

        subjects = {pseudonym_of(kafka, s): s for s in ("subject-1", "subject-2", "subject-3")}  # alerts hold these

        def fired() -> list[str]:
            return sorted(subjects[a.details["user_id"]] for a in published(kafka))

        time.sleep(1.0)
        clock.advance(29 * DAY)
        time.sleep(0.5)
        assert fired() == []
        clock.advance(3 * DAY)  # past one calendar month, not yet 45 days
        assert _eventually(lambda: fired() == ["subject-1"])
        clock.advance(14 * DAY)
        assert _eventually(lambda: fired() == ["subject-1", "subject-2"])
        alerts = {subjects[a.details["user_id"]]: a for a in published(kafka)}
        assert (alerts["subject-1"].regulation, alerts["subject-1"].article) == ("GDPR", "Art. 12(3)")
        assert alerts["subject-2"].regulation == "CCPA" and "1798.130" in alerts["subject-2"].article
    finally:
        stop.set()
        runner.join(30)
    assert alerter.stats.alerts == 2


def _eventually(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()
