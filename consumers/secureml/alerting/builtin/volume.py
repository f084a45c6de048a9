"""Bulk access: more records read by one user within a time window than a threshold allows."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from secureml.alerting.alert import Alert, Trigger
from secureml.alerting.builtin.access import AccessOptions, AccessRule
from secureml.alerting.event import Event
from secureml.alerting.periods import Duration, Period
from secureml.alerting.rule import OptionsArg, RuleContext
from secureml.audit.privacy import stored_identities
from secureml.audit.timeutil import micros_to_iso

_SLIDING_BUCKETS = 60  # a sliding window advances in 1/60 of its length: bounded state, 1.7% granularity
_NO_USER = "(no user)"


class BulkOptions(AccessOptions):
    """Options of bulk_access: how many records one user may read within a window."""

    threshold: int | None = Field(None, gt=0)  # required: records per user per window; more than this alerts
    window: Duration = 3600.0
    mode: Literal["sliding", "tumbling"] = "sliding"
    exempt_users: list[str] = []
    max_triggers: int = Field(20, ge=1, le=1000)  # most recent accesses named in the alert

    def missing(self) -> list[str]:
        return ["threshold"] if self.threshold is None else []


class BulkAccess(AccessRule):
    """Sums ``num_records`` per user over a sliding (or tumbling) window and alerts once per excess.

    A sliding window alerts at the access that crosses the threshold, then stays quiet for one
    window; a tumbling window (aligned on the epoch) alerts at most once per window. Off until
    the organisation sets its ``threshold``: what counts as bulk depends on its datasets.
    """

    id = "bulk_access"
    title = "A user read more records within the window than the threshold allows."
    basis = ("GDPR Art. 5(1)(c), data minimisation, and Art. 32: mass reads beyond what a purpose needs are "
             "a sign of exfiltration that security measures must detect.")
    Options = BulkOptions
    options: BulkOptions
    example = "{threshold: 50000, window: 1h}"
    severity = "high"
    regulation = "GDPR"
    article = "Art. 5(1)(c)"

    def __init__(self, options: OptionsArg = None, *, rule_id: str | None = None) -> None:
        super().__init__(options, rule_id=rule_id)
        window_us = round(self.options.window * 1_000_000)
        sliding = self.options.mode == "sliding"
        self._bucket_us = max(1, window_us // _SLIDING_BUCKETS) if sliding else window_us
        self._buckets = _SLIDING_BUCKETS if sliding else 1
        self._window_us = window_us

    def on_access(self, event: Event, ctx: RuleContext) -> list[Alert]:
        threshold = self.options.threshold or 0
        user = event.user or _NO_USER
        records = int(event.get("num_records", 0))
        if records == 0 or user in stored_identities(tuple(self.options.exempt_users)):
            return []
        entry = ctx.state.setdefault(user, {"buckets": {}, "recent": [], "quiet_until": 0, "top": 0})
        bucket = event.timestamp // self._bucket_us
        top = entry["top"] = max(entry["top"], bucket)
        buckets: dict[str, int] = entry["buckets"]
        if bucket <= top - self._buckets:  # older than the window (arrived late): it no longer counts
            return []
        buckets[str(bucket)] = buckets.get(str(bucket), 0) + records
        for key in [k for k in buckets if int(k) <= top - self._buckets]:
            del buckets[key]
        recent: list[dict[str, Any]] = entry["recent"]
        recent.append({**event.trigger().to_dict(), "ts": event.timestamp})
        del recent[: -self.options.max_triggers]
        total = sum(buckets.values())
        if total <= threshold or event.timestamp < entry["quiet_until"]:
            return []
        first = (top - self._buckets + 1) * self._bucket_us
        if self._buckets == 1:
            entry["quiet_until"] = first + self._window_us
            identity = [user, str(first)]
        else:
            entry["quiet_until"] = event.timestamp + self._window_us
            identity = [user, event.event_id]
        window = Period(seconds=self.options.window)
        message = (f"User {user!r} read {total:,} records within {window} (threshold {threshold:,}); "
                   f"the last access was {records:,} record(s) of {event.get('dataset_name')!r}.")
        details = {"user": user, "total_records": total, "threshold": threshold,
                   "window_seconds": self.options.window, "mode": self.options.mode,
                   "window_start": micros_to_iso(first), "window_end": micros_to_iso(event.timestamp)}
        triggers = [Trigger.from_dict(t) for t in recent if t["ts"] >= first]
        return [ctx.alert(message, triggers, event_time=event.timestamp, identity=identity, details=details)]
