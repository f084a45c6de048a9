"""Timer rules: a data-subject request past its deadline, an operation never closed."""

from __future__ import annotations

import fnmatch
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from secureml.alerting import timers
from secureml.alerting.alert import Alert, Trigger
from secureml.alerting.event import Event
from secureml.alerting.periods import Deadline, Duration, Period
from secureml.alerting.rule import OptionsArg, Rule, RuleContext, RuleOptions
from secureml.audit.timeutil import micros_to_iso

_PRUNE_EVERY = 3600 * 1_000_000  # micros between sweeps of old completions


class RequestDeadline(BaseModel):
    """How long a regulation allows for answering a data-subject request, and where it says so."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    within: Deadline
    article: str


class RequestOptions(RuleOptions):
    """Options of request_deadline_missed."""

    deadlines: dict[str, RequestDeadline] = {
        "GDPR": RequestDeadline(within=Period(months=1), article="Art. 12(3)"),
        "CCPA": RequestDeadline(within=Period(seconds=45 * 86400), article="Cal. Civ. Code § 1798.130(a)(2)"),
    }
    default_regulation: str = "GDPR"  # when neither the request nor its trail names one with a deadline
    closing_statuses: list[str] = ["completed", "closed", "fulfilled", "rejected", "denied"]

    @model_validator(mode="after")
    def _default_has_deadline(self) -> RequestOptions:
        if self.default_regulation not in self.deadlines:
            raise ValueError(f"default_regulation {self.default_regulation!r} is not one of the deadlines "
                             f"({', '.join(self.deadlines)}): add it there or pick one of those")
        return self


class RequestDeadlineMissed(Rule):
    """A data-subject request (user_id + request_type) still open when its regulation's deadline passes.

    The first event of a request opens it; an event of the same request with a closing status
    (at the same time or later, from any operation) closes it. The regulation comes from the
    request's ``details["regulation"]``, else the trail's regulations (the shortest deadline
    wins), else ``default_regulation``. Fires on the timer, when the clock passes the deadline.
    """

    id = "request_deadline_missed"
    title = "A data-subject request was not completed within its legal deadline."
    basis = ("GDPR Art. 12(3): answer within one month of receipt; CCPA (Cal. Civ. Code § 1798.130(a)(2)): "
             "within 45 days.")
    Options = RequestOptions
    options: RequestOptions
    event_types = frozenset({"user_request"})
    severity = "critical"
    regulation = "GDPR"
    article = "Art. 12(3)"

    def __init__(self, options: OptionsArg = None, *, rule_id: str | None = None) -> None:
        super().__init__(options, rule_id=rule_id)
        self._closing = frozenset(s.lower() for s in self.options.closing_statuses)
        self._by_name = {name.lower(): name for name in self.options.deadlines}

    def _regulation(self, event: Event) -> str:
        named = event.json_object("details").get("regulation")
        candidates = [named] if isinstance(named, str) else list(event.get("regulations", []))
        known = [self._by_name[c.lower()] for c in candidates if c.lower() in self._by_name]
        if not known:
            return self.options.default_regulation
        return min(known, key=lambda name: self.options.deadlines[name].within.after(event.timestamp))

    def on_event(self, event: Event, ctx: RuleContext) -> list[Alert]:
        request_type = str(event.get("request_type", "")).lower()
        key = f"{request_type}\x1f{event.get('user_id')}"
        closes: dict[str, int] = ctx.state.setdefault("closed", {})
        if str(event.get("status", "")).lower() in self._closing:
            closes[key] = max(closes.get(key, 0), event.timestamp)
            opened = timers.pending(ctx.state, key)
            if opened is not None and opened["at"] <= event.timestamp:
                timers.cancel(ctx.state, key)
            return []
        if timers.pending(ctx.state, key) is not None or closes.get(key, -1) >= event.timestamp:
            return []  # already open (keep the first), or closed by an event read earlier from another partition
        regulation = self._regulation(event)
        rule = self.options.deadlines[regulation]
        timers.schedule(ctx.state, key, {
            "due": rule.within.after(event.timestamp), "at": event.timestamp, "regulation": regulation,
            "request_type": request_type, "user_id": event.get("user_id"), "status": event.get("status"),
            "trigger": event.trigger().to_dict(),
        })
        return []

    def on_tick(self, now: int, ctx: RuleContext) -> list[Alert]:
        alerts = []
        if now - ctx.state.get("pruned_at", 0) >= _PRUNE_EVERY:
            ctx.state["pruned_at"] = now
            longest = max(d.within.after(now) - now for d in self.options.deadlines.values())
            closes: dict[str, int] = ctx.state.setdefault("closed", {})
            for key in [k for k, at in closes.items() if at < now - longest]:
                del closes[key]  # older than any deadline: no request still to come can be closed by it
        for _key, entry in timers.expired(ctx.state, now):
            rule = self.options.deadlines[entry["regulation"]]
            message = (f"The {entry['request_type']} request of data subject {entry['user_id']!r} received "
                       f"{micros_to_iso(entry['at'])[:10]} was not completed within {rule.within} "
                       f"({entry['regulation']} {rule.article}); its last status is {entry['status']!r}.")
            details = {key: entry[key] for key in ("request_type", "user_id", "status", "regulation")}
            details |= {"received_at": micros_to_iso(entry["at"]), "deadline": micros_to_iso(entry["due"]),
                        "allowed": str(rule.within)}
            alerts.append(ctx.alert(message, [Trigger.from_dict(entry["trigger"])], event_time=entry["due"],
                                    regulation=entry["regulation"], article=rule.article, details=details))
        return alerts


class OperationOptions(RuleOptions):
    """Options of operation_not_closed."""

    timeout: Duration = 3600.0
    exempt_operations: list[str] = []  # operation names or glob patterns (long-running services)


class OperationNotClosed(Rule):
    """An audit trail started (seq 0) whose ``audit_closed`` did not follow within the timeout."""

    id = "operation_not_closed"
    title = "An audited operation was started and never closed within the timeout."
    basis = ("GDPR Art. 5(2) and Art. 30, accountability: an audit trail left open is incomplete evidence "
             "(a crash, a killed job, or events that never arrived).")
    Options = OperationOptions
    options: OperationOptions
    event_types = frozenset({"audit_started", "audit_closed"})
    severity = "low"
    regulation = "GDPR"
    article = "Art. 5(2)"

    def on_event(self, event: Event, ctx: RuleContext) -> list[Alert]:
        if event.event_type == "audit_closed":
            timers.cancel(ctx.state, event.operation_id)
            return []
        name = str(event.get("operation_name", ""))
        if any(fnmatch.fnmatchcase(name, p) for p in self.options.exempt_operations):
            return []
        entry: dict[str, Any] = {"due": event.timestamp + round(self.options.timeout * 1_000_000),
                                 "at": event.timestamp, "name": name, "trigger": event.trigger().to_dict()}
        timers.schedule(ctx.state, event.operation_id, entry)
        return []

    def on_tick(self, now: int, ctx: RuleContext) -> list[Alert]:
        alerts = []
        for _key, entry in timers.expired(ctx.state, now):
            message = (f"Operation {entry['name']!r} started {micros_to_iso(entry['at'])} and was not closed "
                       f"within {Period(seconds=self.options.timeout)}.")
            details = {"operation_name": entry["name"], "started_at": micros_to_iso(entry["at"]),
                       "timeout_seconds": self.options.timeout}
            alerts.append(ctx.alert(message, [Trigger.from_dict(entry["trigger"])], event_time=entry["due"],
                                    details=details))
        return alerts
