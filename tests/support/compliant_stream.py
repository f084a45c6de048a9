"""A realistic compliant audit stream over simulated weeks, and one planted violation per built-in rule (no tests here).

Events go through the real producer (AuditTrail, encoding, sealing, transport); only the time
they are stamped with comes from a simulated clock (``SimulatedTime``), so the stream covers
many hours and days, weekends and nights, in a few seconds.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import pandas as pd

from conftest import Harness
from secureml.audit import AuditTrail
from secureml.audit.timeutil import now_micros
from secureml.compliance import ComplianceAuditor

BERLIN = ZoneInfo("Europe/Berlin")
MINUTE = 60 * 1_000_000
DAY = 24 * 60 * MINUTE
ANALYSTS = [f"analyst-{i}" for i in range(10)]
FRAUD_TEAM = ["fraud-1", "fraud-2"]
CLINICIANS = ["clin-1", "clin-2", "clin-3"]
ON_CALL = ["oncall-1"]  # a person who works nights and weekends (exempt from the hours rule)
SERVICES = ["svc-etl", "svc-train", "svc-serving"]
FAMILIES = {"customers": ["age", "zip", "ssn", "income"], "visits": ["age", "diagnosis_code", "ward"],
            "claims": ["amount", "zip", "procedure"], "sessions": ["device", "country", "duration"]}
PURPOSES = ["churn model", "fraud check", "capacity planning", "treatment outcomes", "pricing", "model monitoring"]

# The organisation's facts for the rules that need them; the compliant stream keeps to them.
ORGANISATION_RULES = """
rules:
  bulk_access: {threshold: 50000, window: 1h, exempt_users: [svc-etl, svc-train]}
  sensitive_column_access:
    column_roles: {ssn: [fraud_team], "diagnos*": [clinician]}
    allowed_users: [svc-etl]
  access_outside_hours:
    timezone: Europe/Berlin
    start: "07:00"
    end: "20:00"
    days: [mon, tue, wed, thu, fri]
    exempt_users: [oncall-1, svc-etl, svc-train, svc-serving]
"""
NEEDS_ORGANISATION = {"bulk_access", "sensitive_column_access", "access_outside_hours"}


class SimulatedTime:
    """The producer's clock in the test: UTC micros that the stream sets before each event."""

    def __init__(self) -> None:
        self.now = now_micros()

    def __call__(self) -> int:
        self.now += 1000  # every event a millisecond after the one before
        return self.now


@dataclass
class Planted:
    """A violation written into the stream: the alert it must raise (rule, operation, seq of its last trigger)."""

    rule_id: str
    operation_id: str
    seq: int


@dataclass
class ComplianceStream:
    """Writes the compliant stream and the planted violations into a harness's transport."""

    harness: Harness
    time: SimulatedTime
    seed: int = 14
    events: int = 0
    planted: list[Planted] = field(default_factory=list)
    operations: list[tuple[str | None, dt.datetime]] = field(default_factory=list)  # (user, UTC start) of each
    _epsilon: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def trail(self, name: str, at: int, user: str | None, role: str | None = None) -> Iterator[AuditTrail]:
        """An audit trail whose events start at ``at`` (UTC micros), closed on exit."""
        self.time.now = at
        context = {"role": role} if role else {}
        trail = AuditTrail(name, **self.harness.options(), user=user, regulations=["GDPR"], context=context)
        yield trail
        trail.close()
        self.events += trail.event_count
        self.operations.append((user, dt.datetime.fromtimestamp(at / 1e6, dt.UTC)))

    def write_compliant(self, *, start: int, days: int) -> None:
        """Two to three weeks of work: ETL with anonymisation, trainings on protected data, serving, reads, requests."""
        rng = random.Random(self.seed)
        at = start
        for family, columns in FAMILIES.items():  # the pipelines' first runs, before anything trains on them
            at = self._etl(at, family, columns) + 10 * MINUTE
        end = start + days * DAY
        while at < end:
            at += rng.randint(3, 25) * MINUTE
            kind = rng.choices(["serve", "read", "etl", "train", "request", "audit"], [30, 40, 6, 10, 6, 2])[0]
            if kind == "read":
                at = self._read(rng, at)
            elif kind == "serve":
                with self.trail("serve-churn", at, "svc-serving") as t:
                    for i in range(rng.randint(15, 50)):
                        t.log_model_inference("churn-v3", f"request-{at}-{i}", rng.choice(["stay", "leave"]),
                                              round(rng.uniform(0.5, 1), 3))
                at = self.time.now
            elif kind == "etl":
                family = rng.choice(list(FAMILIES))
                at = self._etl(at, family, FAMILIES[family])
            elif kind == "train":
                at = self._train(rng, at)
            elif kind == "request":
                at = self._request(rng, at)
            elif rng.random() < 0.9:
                with self.trail("nightly-checks", at, "svc-etl") as t:
                    for check in ("consent_recorded", "retention_policy", "dpia_current"):
                        t.log_compliance_check(check, "GDPR", True, {"scope": "all"})
                at = self.time.now
            else:  # the real auditor, as the OS user, on data with no personal data: every check passes
                self.time.now = at
                auditor = ComplianceAuditor("GDPR", **self.harness.options())
                report = auditor.audit_dataset(_sensor_readings(), "sensors")
                assert not report.has_issues(), report.summary()
                self.events += 3 + len(report.checks)
                at = self.time.now

    def _working_time(self, rng: random.Random, at: int) -> int:
        """The next Berlin working moment (Mon-Fri 08:00-17:59) at or after ``at``."""
        local = dt.datetime.fromtimestamp(at / 1e6, BERLIN)
        if local.weekday() < 5 and 8 <= local.hour < 18:
            return at
        while local.weekday() >= 5 or not 8 <= local.hour < 18:
            local = (local + dt.timedelta(hours=1)).replace(minute=rng.randint(0, 59))
        return int(local.timestamp() * 1e6)

    def _read(self, rng: random.Random, at: int) -> int:
        """A read by whoever works at ``at``: the on-call person outside Berlin working hours, else anyone."""
        who = rng.random() if self._working_time(rng, at) == at else 0.35
        family = rng.choice(list(FAMILIES))
        columns = [c for c in FAMILIES[family] if c not in ("ssn", "diagnosis_code")]
        if who < 0.15:
            user, role, columns, family = rng.choice(FRAUD_TEAM), "fraud_team", ["ssn", "income"], "customers"
        elif who < 0.3:
            user, role, columns, family = rng.choice(CLINICIANS), "clinician", ["diagnosis_code", "ward"], "visits"
        elif who < 0.4:  # on call: any hour, any day
            user, role = ON_CALL[0], "analyst"
        else:
            user, role = rng.choice(ANALYSTS), "analyst"
        with self.trail(f"analysis-{family}", at, user, role) as t:
            for _ in range(rng.randint(1, 2)):
                t.log_data_access(family, columns, rng.randint(10, 1500), rng.choice(PURPOSES))
                t.log_model_inference("churn-v3", f"what-if-{rng.randint(0, 10**6)}", "stay", 0.8)
            t.log_compliance_check("purpose_documented", "GDPR", True, None)
        return self.time.now

    def _etl(self, at: int, family: str, columns: list[str]) -> int:
        with self.trail(f"etl-{family}", at, "svc-etl") as t:
            t.log_data_access(f"raw_{family}", columns, 20000, "pseudonymisation for analytics")
            t.log_data_transformation("anonymization", f"raw_{family}", f"anon_{family}", {"k": 10})
            t.log_data_transformation("feature_engineering", f"anon_{family}", f"features_{family}", None)
            t.log_compliance_check("k_anonymity", "GDPR", True, {"k": 10})
        return self.time.now

    def _train(self, rng: random.Random, at: int) -> int:
        family = rng.choice(list(FAMILIES))
        dataset = rng.choice([f"anon_{family}", f"features_{family}"])
        with self.trail(f"train-{family}", at, "svc-train") as t:
            plain = [c for c in FAMILIES[family] if c not in ("ssn", "diagnosis_code")]
            t.log_data_access(dataset, plain[:2], 20000, "model training")
            spent = self._epsilon.get(dataset, 0.0)
            privacy = {"epsilon": 0.5, "delta": 1e-6} if spent + 0.5 <= 8 else None  # well within a budget of 10
            self._epsilon[dataset] = spent + (0.5 if privacy else 0)
            t.log_model_training("gradient_boosting", dataset, {"depth": 6}, {"auc": 0.81}, privacy)
        return self.time.now

    def _request(self, rng: random.Random, at: int) -> int:
        subject = f"subject-{rng.randint(0, 10**6)}"
        kind = rng.choice(["access", "erasure", "rectification"])
        with self.trail("privacy-desk", at, "privacy-officer") as t:
            t.log_user_request(kind, subject, {"channel": "web"}, "received")
        with self.trail("privacy-desk", at + rng.randint(1, 10) * DAY, "privacy-officer") as t:
            t.log_user_request(kind, subject, None, "completed")
        self.time.now = at
        return at + MINUTE

    def plant(self, rule_id: str, at: int, seq: int = 1, *, user: str | None = "analyst-0",
              role: str | None = "analyst", close: bool = True) -> AuditTrail:
        """A trail at ``at`` whose event ``seq`` must raise ``rule_id`` (the caller logs it; closed unless told)."""
        self.time.now = at
        trail = AuditTrail(f"planted-{rule_id}", **self.harness.options(), user=user, regulations=["GDPR"],
                           context={"role": role} if role else {})
        self.planted.append(Planted(rule_id, trail.operation_id, seq))
        return trail

    def plant_one_violation_of_each_rule(self, now: int) -> None:
        """One violation of every built-in rule, each in its own operation, each breaking that rule only."""
        monday = self._working_time(random.Random(1), now - 6 * DAY)
        saturday_night = int(dt.datetime.fromtimestamp((now - 3 * DAY) / 1e6, BERLIN).replace(
            hour=3, minute=12).timestamp() * 1e6)
        while dt.datetime.fromtimestamp(saturday_night / 1e6, BERLIN).weekday() != 5:
            saturday_night -= DAY
        with self.trail("etl-sessions-dp", monday - DAY, "svc-etl") as etl:  # the budget's dataset is protected
            etl.log_data_transformation("differential_privacy", "raw_sessions", "anon_sessions_dp", None)
        done = []
        t = self.plant("failed_compliance_check", monday)
        t.log_compliance_check("consent_recorded", "GDPR", False, {"missing": 12})
        done.append(t)
        t = self.plant("access_without_purpose", monday + 10 * MINUTE)
        t.log_data_access("claims", ["amount"], 40, None)
        done.append(t)
        t = self.plant("access_without_user", monday + 20 * MINUTE, user=None)
        t.log_data_access("claims", ["amount"], 40, "pricing")
        done.append(t)
        t = self.plant("training_on_unprotected_data", monday + 30 * MINUTE, user="svc-train", role=None)
        t.log_model_training("logreg", "raw_customers", {"c": 1.0})
        done.append(t)
        for epsilon in (4, 4):
            t = self.plant("privacy_budget_exceeded", monday + 40 * MINUTE, user="svc-train", role=None)
            t.log_model_training("logreg", "anon_sessions_dp", None, None, {"epsilon": epsilon})
            t.close()
            self.planted.pop()
        t = self.plant("privacy_budget_exceeded", monday + 45 * MINUTE, user="svc-train", role=None)
        t.log_model_training("logreg", "anon_sessions_dp", None, None, {"epsilon": 4})  # 12 > 10
        done.append(t)
        t = self.plant("request_deadline_missed", now - 45 * DAY, user="privacy-officer", role=None)
        t.log_user_request("erasure", "subject-forgotten", None, "received")
        done.append(t)
        t = self.plant("operation_not_closed", monday + 50 * MINUTE, seq=0)
        t.log_data_access("sessions", ["device"], 10, "model monitoring")
        assert t.flush().ok  # started, never closed
        t = self.plant("bulk_access", monday + 60 * MINUTE, user="analyst-7")
        t.log_data_access("customers", ["age", "zip"], 60_000, "churn model")
        done.append(t)
        t = self.plant("sensitive_column_access", monday + 70 * MINUTE, user="analyst-3")
        t.log_data_access("customers", ["age", "ssn"], 30, "churn model")
        done.append(t)
        t = self.plant("access_outside_hours", saturday_night, user="analyst-5")
        t.log_data_access("sessions", ["device", "country"], 30, "capacity planning")
        done.append(t)
        for trail in done:
            trail.close()


def _sensor_readings() -> pd.DataFrame:
    """Machine readings: no personal data at all."""
    return pd.DataFrame({"sensor": [f"S-{i % 4:03d}" for i in range(200)],
                         "temperature": [20.0 + (i % 7) * 0.5 for i in range(200)],
                         "status": ["ok" if i % 9 else "fault" for i in range(200)]})
