"""Rules on single data accesses: no purpose, no user, sensitive columns, outside working hours."""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import field_validator

from secureml.alerting.alert import Alert
from secureml.alerting.event import Event
from secureml.alerting.rule import Rule, RuleContext, RuleOptions, who
from secureml.audit.timeutil import micros_to_datetime

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _access_details(event: Event) -> dict[str, object]:
    return {"dataset_name": event.get("dataset_name"), "num_records": event.get("num_records"),
            "columns_accessed": event.get("columns_accessed", []), "purpose": event.get("purpose"),
            "user": event.user, "operation_name": event.get("operation_name")}


def _read(event: Event) -> str:
    return f"read {event.get('num_records', 0):,} record(s) of {event.get('dataset_name')!r}"


class PurposeOptions(RuleOptions):
    """Options of access_without_purpose."""

    placeholders: list[str] = ["n/a", "na", "none", "null", "unknown", "tbd", "-"]


class AccessWithoutPurpose(Rule):
    """A data access whose purpose is missing, blank or a placeholder."""

    id = "access_without_purpose"
    title = "Data was accessed without a declared purpose."
    basis = ("GDPR Art. 5(1)(b), purpose limitation: personal data is collected and used for specified, explicit "
             "purposes only.")
    Options = PurposeOptions
    options: PurposeOptions
    event_types = frozenset({"data_access"})
    severity = "high"
    regulation = "GDPR"
    article = "Art. 5(1)(b)"

    def on_event(self, event: Event, ctx: RuleContext) -> list[Alert]:
        purpose = (event.get("purpose") or "").strip()
        if purpose and purpose.lower() not in {p.lower() for p in self.options.placeholders}:
            return []
        said = f" (given as {purpose!r})" if purpose else ""
        message = f"{who(event, start=True)} {_read(event)} without declaring a purpose{said}."
        return [ctx.alert(message, [event.trigger()], event_time=event.timestamp, details=_access_details(event))]


class AccessWithoutUser(Rule):
    """A data access that records no user."""

    id = "access_without_user"
    title = "Data was accessed with no user recorded."
    basis = ("GDPR Art. 5(2) and Art. 30, accountability and records of processing: the controller must be able to "
             "show who processed personal data.")
    event_types = frozenset({"data_access"})
    severity = "medium"
    regulation = "GDPR"
    article = "Art. 5(2)"

    def on_event(self, event: Event, ctx: RuleContext) -> list[Alert]:
        if event.user:
            return []
        message = f"Someone {_read(event)} in operation {event.get('operation_name')!r}, but no user is recorded."
        return [ctx.alert(message, [event.trigger()], event_time=event.timestamp, details=_access_details(event))]


DEFAULT_SENSITIVE_COLUMNS = [
    "ssn", "social_security*", "national_id*", "passport*", "tax_id", "credit_card*", "card_number", "iban",
    "health*", "diagnos*", "medical*", "genetic*", "biometric*", "ethnic*", "race", "religio*", "political*",
    "sexual_orientation", "sex_life", "trade_union*",
]


class SensitiveOptions(RuleOptions):
    """Options of sensitive_column_access."""

    columns: list[str] = DEFAULT_SENSITIVE_COLUMNS  # names or glob patterns, case-insensitive
    allowed_users: list[str] = []
    allowed_roles: list[str] = []
    role_field: str = "role"  # key of the trail's context that holds the user's role


class SensitiveColumnAccess(Rule):
    """Sensitive columns read by a user who is neither allowed by name nor by role."""

    id = "sensitive_column_access"
    title = "Sensitive columns were read by a user or role that is not allowed to."
    basis = ("GDPR Art. 9 (special categories of data) with Art. 25(2) and Art. 32(4): only authorised persons, "
             "and only for what they need, may see such data.")
    Options = SensitiveOptions
    options: SensitiveOptions
    event_types = frozenset({"data_access"})
    severity = "high"
    regulation = "GDPR"
    article = "Art. 9"

    def __init__(self, options: RuleOptions | None = None, *, rule_id: str | None = None) -> None:
        super().__init__(options, rule_id=rule_id)
        pattern = "|".join(fnmatch.translate(c.lower()) for c in self.options.columns)
        self._sensitive = re.compile(pattern or "(?!)")

    def on_event(self, event: Event, ctx: RuleContext) -> list[Alert]:
        hits = [c for c in event.get("columns_accessed", []) if self._sensitive.match(c.lower())]
        if not hits or event.user in self.options.allowed_users:
            return []
        role = event.json_object("context").get(self.options.role_field)
        if role is not None and str(role) in self.options.allowed_roles:
            return []
        as_role = f" (role {role!r})" if role is not None else ""
        message = (f"{who(event, start=True)}{as_role} read sensitive column(s) {', '.join(hits)} of "
                   f"{event.get('dataset_name')!r} without being allowed to.")
        details = {**_access_details(event), "sensitive_columns": hits, "role": role}
        return [ctx.alert(message, [event.trigger()], event_time=event.timestamp, details=details)]


class HoursOptions(RuleOptions):
    """Options of access_outside_hours."""

    start: dt.time = dt.time(7, 0)
    end: dt.time = dt.time(19, 0)  # exclusive; before the start: spans midnight; equal to it: the whole day
    days: list[Weekday] = ["mon", "tue", "wed", "thu", "fri"]
    timezone: str = "UTC"
    event_types: list[str] = ["data_access"]
    exempt_users: list[str] = []

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}: use an IANA name such as Europe/Berlin") from None
        return value


class AccessOutsideHours(Rule):
    """Events (data accesses by default) outside the allowed days and hours of a time zone."""

    id = "access_outside_hours"
    title = "Data was accessed outside the allowed working hours."
    basis = ("GDPR Art. 32(1)(b) and (d), security of processing: access at unusual times is a sign of misuse "
             "that the controller's measures must detect.")
    Options = HoursOptions
    options: HoursOptions
    severity = "medium"
    regulation = "GDPR"
    article = "Art. 32(1)"

    def __init__(self, options: RuleOptions | None = None, *, rule_id: str | None = None) -> None:
        super().__init__(options, rule_id=rule_id)
        self.event_types = frozenset(self.options.event_types)
        self._zone = ZoneInfo(self.options.timezone)
        self._days = frozenset(_WEEKDAYS.index(d) for d in self.options.days)

    def _allowed(self, local: dt.datetime) -> bool:
        start, end, now = self.options.start, self.options.end, local.time()
        if start == end:
            return local.weekday() in self._days
        if start < end:
            return local.weekday() in self._days and start <= now < end
        # Overnight window: the part after midnight belongs to the day the window started.
        if now >= start:
            return local.weekday() in self._days
        return now < end and (local.weekday() - 1) % 7 in self._days

    def on_event(self, event: Event, ctx: RuleContext) -> list[Alert]:
        if event.user in self.options.exempt_users:
            return []
        local = micros_to_datetime(event.timestamp).astimezone(self._zone)
        if self._allowed(local):
            return []
        o = self.options
        allowed = f"{'/'.join(o.days)} {o.start:%H:%M}-{o.end:%H:%M} {o.timezone}"
        what = _read(event) if event.event_type == "data_access" else f"logged {event.event_type}"
        message = (f"{who(event, start=True)} {what} at {local:%a %H:%M} {o.timezone}, "
                   f"outside the allowed hours ({allowed}).")
        details = {**_access_details(event), "local_time": local.isoformat(), "allowed": allowed}
        return [ctx.alert(message, [event.trigger()], event_time=event.timestamp, details=details)]
