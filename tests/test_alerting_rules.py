"""What each built-in rule decides, on events with chosen times (rule state round-trips through JSON between events)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from secureml.alerting import Alert, Event, Rule, RuleContext, load_rules
from secureml.alerting.builtin.access import AccessOutsideHours, AccessWithoutPurpose, SensitiveColumnAccess
from secureml.alerting.builtin.checks import FailedComplianceCheck
from secureml.alerting.builtin.deadlines import OperationNotClosed, RequestDeadlineMissed
from secureml.alerting.builtin.lineage import PrivacyBudgetExceeded, TrainingOnUnprotectedData
from secureml.alerting.builtin.volume import BulkAccess
from secureml.alerting.periods import Period, parse_period
from secureml.alerting.watermark import Watermarks

T0 = dt.datetime(2026, 7, 6, 10, 0, tzinfo=dt.UTC)  # a Monday in summer time


def micros(at: dt.datetime) -> int:
    """UTC micros of a datetime."""
    return int(at.timestamp()) * 1_000_000 + at.microsecond


def event(event_type: str, at: dt.datetime, *, op: str = "op-1", seq: int = 1, user: str | None = "alice",
          **fields: Any) -> Event:
    """An event as the alerter hands it to rules (JSON fields given as dicts)."""
    record = {"event_type": event_type, "event_id": f"{op}:{seq}", "operation_id": op, "operation_name": "job",
              "seq": seq, "timestamp": micros(at), "user": user, "regulations": fields.pop("regulations", ["GDPR"]),
              "context": json.dumps(fields.pop("context", {}))}
    record |= {k: json.dumps(v) if isinstance(v, dict) else v for k, v in fields.items()}
    return Event(record, "audit-events/0", seq)


def rule_of(rule_id: str, yaml_options: str = "{}") -> Rule:
    """A built-in rule with options given as YAML."""
    return next(r for r in load_rules(text=f"rules: {{{rule_id}: {yaml_options}}}") if r.rule_id == rule_id)


def feed(rule: Rule, events: list[Event], *, now: dt.datetime | None = None) -> list[Alert]:
    """Alerts of a rule over events, then one tick at ``now`` with the log read up to ``now`` (the watermark).

    The state goes through JSON after every step.
    """
    watermarks = Watermarks(lambda: micros(now or T0))
    ctx = RuleContext(rule, {}, lambda: micros(now or T0), watermarks)
    alerts: list[Alert] = []
    for e in events:
        alerts += rule.on_event(e, ctx)
        ctx.state = json.loads(json.dumps(ctx.state))
    if now is not None:
        watermarks.observe("audit-events/0", micros(now))
        alerts += rule.on_tick(micros(now), ctx)
    return alerts


def access(at: dt.datetime, records: int = 400, **fields: Any) -> Event:
    """A data access (sequence numbers from the minute, so ids differ)."""
    fields.setdefault("seq", int((at - T0).total_seconds() // 60) + 1)
    return event("data_access", at, dataset_name="customers", columns_accessed=fields.pop("columns", ["age"]),
                 num_records=records, purpose=fields.pop("purpose", "churn"), **fields)


def test_month_deadlines_follow_the_calendar() -> None:
    """One month after 31 January is the last day of February; days are fixed lengths."""
    jan31 = micros(dt.datetime(2027, 1, 31, 9, 30, tzinfo=dt.UTC))
    assert parse_period("1mo").after(jan31) == micros(dt.datetime(2027, 2, 28, 9, 30, tzinfo=dt.UTC))
    assert parse_period("45d").after(jan31) == jan31 + 45 * 86_400 * 1_000_000
    assert (str(Period(months=1)), str(parse_period("90m")), str(parse_period(30))) == ("1mo", "90m", "30s")


def test_sliding_bulk_window_alerts_once_per_excess() -> None:
    """Sliding: the access that takes a user over the threshold alerts; the window after it stays quiet."""
    rule = BulkAccess(BulkAccess.Options(threshold=1000, window=3600))
    minutes = [0, 30, 50, 55, 175, 185, 190]
    alerts = feed(rule, [access(T0 + dt.timedelta(minutes=m)) for m in minutes])
    assert [a.details["total_records"] for a in alerts] == [1200, 1200]
    assert [a.triggers[-1].seq for a in alerts] == [51, 191]
    assert len(alerts[0].triggers) == 3


def test_tumbling_bulk_window_has_one_id_whatever_the_order() -> None:
    """Tumbling windows are aligned on the clock hour: the alert id names user and window, not the crossing access."""
    rule_options = BulkAccess.Options(threshold=1000, window=3600, mode="tumbling")
    split = [access(T0 - dt.timedelta(minutes=5), 600), access(T0 + dt.timedelta(minutes=5), 600)]
    assert feed(BulkAccess(rule_options), split) == []
    same_hour = [access(T0 + dt.timedelta(minutes=m), 600) for m in (5, 25, 45)]
    forward = feed(BulkAccess(rule_options), same_hour)
    backward = feed(BulkAccess(rule_options), same_hour[::-1])
    assert len(forward) == len(backward) == 1
    assert forward[0].alert_id == backward[0].alert_id


def test_hours_in_a_time_zone_and_overnight() -> None:
    """Working hours are judged in the configured zone; a window past midnight belongs to the day it starts."""
    berlin = AccessOutsideHours(AccessOutsideHours.Options.model_validate(
        {"timezone": "Europe/Berlin", "start": "07:00", "end": "19:00"}))
    morning = T0.replace(hour=5, minute=30)  # 07:30 in Berlin (CEST)
    evening = T0.replace(hour=17, minute=30)  # 19:30 in Berlin
    alerts = feed(berlin, [access(morning), access(evening)])
    assert len(alerts) == 1 and "Mon 19:30 Europe/Berlin" in alerts[0].message
    night = AccessOutsideHours(AccessOutsideHours.Options.model_validate(
        {"start": "22:00", "end": "06:00", "days": ["fri"], "timezone": "UTC"}))
    friday = dt.datetime(2026, 7, 10, tzinfo=dt.UTC)
    allowed = [friday.replace(hour=23), friday + dt.timedelta(days=1, hours=3)]
    refused = [friday.replace(hour=3), friday + dt.timedelta(days=1, hours=23)]
    assert len(feed(night, [access(t) for t in allowed])) == 0
    assert len(feed(night, [access(t) for t in refused])) == 2


def test_sensitive_columns_by_pattern_user_and_role() -> None:
    """Glob patterns match any case; allowed users and roles (from the trail's context) read silently."""
    rule = SensitiveColumnAccess(SensitiveColumnAccess.Options(
        columns=["ssn", "*_email"], allowed_users=["dpo"], allowed_roles=["fraud"]))
    events = [
        access(T0, columns=["Contact_EMAIL", "age"], seq=1),
        access(T0, columns=["ssn"], user="dpo", seq=2),
        access(T0, columns=["ssn"], user="carol", context={"role": "fraud"}, seq=3),
        access(T0, columns=["ssn"], user="bob", context={"role": "analyst"}, seq=4),
        access(T0, columns=["age", "zip"], seq=5),
    ]
    alerts = feed(rule, events)
    assert [(a.triggers[0].seq, a.details["sensitive_columns"]) for a in alerts] == [
        (1, ["Contact_EMAIL"]), (4, ["ssn"])]
    assert "(role 'analyst')" in alerts[1].message


def test_placeholder_purpose_counts_as_none() -> None:
    """A purpose such as 'n/a' is no purpose."""
    rule = AccessWithoutPurpose()
    alerts = feed(rule, [access(T0, purpose="N/A", seq=1), access(T0, purpose="fraud check", seq=2)])
    assert [a.triggers[0].seq for a in alerts] == [1]


def transform(at: dt.datetime, kind: str, source: str, output: str, op: str) -> Event:
    """A data transformation event."""
    return event("data_transformation", at, op=op, transformation_type=kind, input_data=source, output_data=output)


def train(at: dt.datetime, dataset: str, op: str, epsilon: float | None = None) -> Event:
    """A model training event."""
    privacy = {"epsilon": epsilon} if epsilon is not None else None
    return event("model_training", at, op=op, model_type="logreg", dataset_name=dataset, privacy_parameters=privacy)


def test_lineage_follows_dataset_names_across_operations() -> None:
    """Protection passes down derived datasets; order of reading does not matter, time order does."""
    minute = dt.timedelta(minutes=1)
    events = [
        train(T0 + 3 * minute, "features", "op-c"),  # read first, from another partition
        transform(T0, "Pseudonymisation", "raw", "pseudo", "op-a"),
        transform(T0 + minute, "feature_engineering", "pseudo", "features", "op-b"),
        train(T0 + 3 * minute, "raw", "op-d"),
        train(T0 + 3 * minute, "public_holidays", "op-e"),
        transform(T0 + 5 * minute, "anonymization", "late", "late_anon", "op-f"),
        train(T0 + 4 * minute, "late_anon", "op-g"),  # trained before its anonymisation happened
    ]
    options = {"exempt_datasets": ["public_*"]}
    later = T0 + 10 * minute
    alerts = feed(TrainingOnUnprotectedData(TrainingOnUnprotectedData.Options(**options)), events, now=later)
    assert sorted(a.details["dataset_name"] for a in alerts) == ["late_anon", "raw"]
    assert feed(TrainingOnUnprotectedData(TrainingOnUnprotectedData.Options(**options)), events,
                now=T0 + 3 * minute) == []  # the log is read up to the trainings' time, not past it
    strict = TrainingOnUnprotectedData(TrainingOnUnprotectedData.Options(**options, inherit=False))
    strict_alerts = feed(strict, events, now=later)
    assert sorted(a.details["dataset_name"] for a in strict_alerts) == ["features", "late_anon", "raw"]


def test_a_training_with_differential_privacy_protects_its_own_data() -> None:
    """A training that declares an epsilon is private training: no lineage alert, unless private_training is off."""
    events = [train(T0, "raw", "op-1", epsilon=1.0), train(T0, "raw", "op-2", epsilon=0), train(T0, "raw", "op-3")]
    later = T0 + dt.timedelta(minutes=1)
    assert [a.operation_id for a in feed(TrainingOnUnprotectedData(), events, now=later)] == ["op-2", "op-3"]
    strict = TrainingOnUnprotectedData({"private_training": False})
    assert sorted(a.operation_id for a in feed(strict, events, now=later)) == ["op-1", "op-2", "op-3"]


def test_privacy_budget_adds_up_per_dataset() -> None:
    """Epsilons add up per dataset; the crossing training alerts once, per-dataset budgets override."""
    rule = PrivacyBudgetExceeded(PrivacyBudgetExceeded.Options(budget=5, datasets={"big": 20}))
    events = [train(T0, "small", f"op-{i}", 2) for i in range(4)] + [train(T0, "big", f"op-b{i}", 4) for i in range(4)]
    alerts = feed(rule, events)
    assert [(a.details["dataset_name"], a.details["epsilon_spent"]) for a in alerts] == [("small", 6)]
    assert [t.operation_id for t in alerts[0].triggers] == ["op-0", "op-1", "op-2"]


@pytest.mark.parametrize("bad", [-3.0, float("nan"), float("inf"), -float("inf"), "2", [1]])
def test_an_invalid_epsilon_is_an_alert_never_a_bypass(bad: Any) -> None:
    """A negative epsilon would give budget back and NaN/inf escape the sum: each is an alert of its own."""
    rule = PrivacyBudgetExceeded(PrivacyBudgetExceeded.Options(budget=5))
    events = [train(T0, "d", "op-1", 4), train(T0, "d", "op-2", bad), train(T0, "d", "op-3", 4)]  # type: ignore[arg-type]
    alerts = feed(rule, events)
    invalid = [a for a in alerts if "declared_epsilon" in a.details]
    assert len(invalid) == 1 and invalid[0].triggers[0].operation_id == "op-2"
    spent = [a.details["epsilon_spent"] for a in alerts if "epsilon_spent" in a.details]
    assert spent == [8]  # 4 + 4: the bad declaration neither added nor took away budget


def request(at: dt.datetime, status: str, op: str, user_id: str = "subject-1", kind: str = "access",
            **fields: Any) -> Event:
    """A data-subject request event."""
    return event("user_request", at, op=op, request_type=kind, user_id=user_id, status=status, **fields)


def test_request_deadlines_by_regulation() -> None:
    """GDPR: one calendar month; CCPA: 45 days; the shortest applies; a completion closes only its own request."""
    rule = RequestDeadlineMissed()
    events = [
        request(T0, "received", "op-1", "gdpr-subject"),
        request(T0, "received", "op-2", "ccpa-subject", regulations=["CCPA"]),
        request(T0, "received", "op-3", "both-subject", regulations=["CCPA", "GDPR"]),
        request(T0, "received", "op-4", "erased-subject", kind="erasure"),
        request(T0 + dt.timedelta(days=2), "completed", "op-5", "erased-subject", kind="access"),
    ]
    due = {days: sorted(a.details["user_id"] for a in feed(rule, events, now=T0 + dt.timedelta(days=days)))
           for days in (30, 32, 46)}
    assert due[30] == []
    assert due[32] == ["both-subject", "erased-subject", "gdpr-subject"]
    assert due[46] == ["both-subject", "ccpa-subject", "erased-subject", "gdpr-subject"]


def test_completion_read_before_its_request_still_closes_it() -> None:
    """A completion from another partition read before the request (but later in time) closes it."""
    rule = RequestDeadlineMissed()
    events = [request(T0 + dt.timedelta(days=3), "Completed", "op-2"), request(T0, "received", "op-1")]
    assert feed(rule, events, now=T0 + dt.timedelta(days=90)) == []


def test_operation_not_closed_after_timeout() -> None:
    """audit_started without audit_closed alerts once the timeout passes; exempt names never do."""
    rule = OperationNotClosed(OperationNotClosed.Options(timeout=600, exempt_operations=["serve-*"]))
    events = [
        event("audit_started", T0, op="a", seq=0), event("audit_closed", T0 + dt.timedelta(minutes=5), op="a", seq=1),
        event("audit_started", T0, op="b", seq=0),
        event("audit_started", T0, op="c", seq=0, operation_name="serve-api"),
    ]
    assert feed(rule, events, now=T0 + dt.timedelta(minutes=9)) == []
    alerts = feed(rule, events, now=T0 + dt.timedelta(minutes=11))
    assert [a.operation_id for a in alerts] == ["b"]
    assert alerts[0].event_time == micros(T0 + dt.timedelta(minutes=10))


def test_failed_check_names_its_regulation_and_article() -> None:
    """The alert carries the checked regulation, and the article from the check's details when given."""
    rule = FailedComplianceCheck()
    events = [
        event("compliance_check", T0, seq=1, check_type="consent", regulation="GDPR", result=False, details={}),
        event("compliance_check", T0, seq=2, check_type="opt_out", regulation="CCPA", result=False,
              details={"article": "§ 1798.120"}),
        event("compliance_check", T0, seq=3, check_type="phi", regulation="HIPAA", result=False, details={}),
        event("compliance_check", T0, seq=4, check_type="consent", regulation="GDPR", result=True, details={}),
    ]
    assert [(a.regulation, a.article) for a in feed(rule, events)] == [
        ("GDPR", "Art. 5(2)"), ("CCPA", "§ 1798.120"), ("HIPAA", "")]
