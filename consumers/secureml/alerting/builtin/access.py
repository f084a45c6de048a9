"""Rules on single data accesses: no purpose, no user, sensitive columns, outside working hours.

A compliance audit reads the dataset it audits and logs that read with the purpose
``compliance_audit`` (``ComplianceAuditor``); the access rules leave such reads alone unless
their ``audit_reads`` option is true, so the auditor never raises alerts about itself.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
from typing import ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import field_validator

from secureml.alerting.alert import Alert
from secureml.alerting.event import Event
from secureml.alerting.rule import OptionsArg, Rule, RuleContext, RuleOptions, who
from secureml.audit.privacy import stored_identities
from secureml.audit.timeutil import micros_to_datetime

AUDIT_PURPOSE = "compliance_audit"  # the purpose ComplianceAuditor logs its reads with (compliance/trail.py)

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _access_details(event: Event) -> dict[str, object]:
    return {"dataset_name": event.get("dataset_name"), "num_records": event.get("num_records"),
            "columns_accessed": event.get("columns_accessed", []), "purpose": event.get("purpose"),
            "user": event.user, "operation_name": event.get("operation_name")}


def _read(event: Event) -> str:
    return f"read {event.get('num_records', 0):,} record(s) of {event.get('dataset_name')!r}"


class AccessOptions(RuleOptions):
    """Options of every rule on data accesses."""

    audit_reads: bool = False  # also judge the reads of compliance audits (purpose 'compliance_audit')


class AccessRule(Rule):
    """A rule on data accesses that leaves a compliance audit's own reads alone (unless ``audit_reads``)."""

    Options: ClassVar[type[RuleOptions]] = AccessOptions
    options: AccessOptions
    event_types = frozenset({"data_access"})

    def on_event(self, event: Event, ctx: RuleContext) -> list[Alert]:
        if not self.options.audit_reads and is_audit_read(event):
            return []
        return self.on_access(event, ctx)

    def on_access(self, event: Event, ctx: RuleContext) -> list[Alert]:
        """Alerts raised by one access that is not a compliance audit's own read (or by any, with audit_reads)."""
        return []


def is_audit_read(event: Event) -> bool:
    """True for a data access made by a compliance audit (its purpose is ``compliance_audit``)."""
    return event.event_type == "data_access" and str(event.get("purpose", "")).strip().lower() == AUDIT_PURPOSE


class PurposeOptions(AccessOptions):
    """Options of access_without_purpose."""

    placeholders: list[str] = ["n/a", "na", "none", "null", "unknown", "tbd", "-"]


class AccessWithoutPurpose(AccessRule):
    """A data access whose purpose is missing, blank or a placeholder."""

    id = "access_without_purpose"
    title = "Data was accessed without a declared purpose."
    basis = ("GDPR Art. 5(1)(b), purpose limitation: personal data is collected and used for specified, explicit "
             "purposes only.")
    Options = PurposeOptions
    options: PurposeOptions
    severity = "high"
    regulation = "GDPR"
    article = "Art. 5(1)(b)"

    def on_access(self, event: Event, ctx: RuleContext) -> list[Alert]:
        purpose = (event.get("purpose") or "").strip()
        if purpose and purpose.lower() not in {p.lower() for p in self.options.placeholders}:
            return []
        said = f" (given as {purpose!r})" if purpose else ""
        message = f"{who(event, start=True)} {_read(event)} without declaring a purpose{said}."
        return [ctx.alert(message, [event.trigger()], event_time=event.timestamp, details=_access_details(event))]


class AccessWithoutUser(AccessRule):
    """A data access that records no user."""

    id = "access_without_user"
    title = "Data was accessed with no user recorded."
    basis = ("GDPR Art. 5(2) and Art. 30, accountability and records of processing: the controller must be able to "
             "show who processed personal data.")
    severity = "medium"
    regulation = "GDPR"
    article = "Art. 5(2)"

    def on_access(self, event: Event, ctx: RuleContext) -> list[Alert]:
        if event.user:
            return []
        message = f"Someone {_read(event)} in operation {event.get('operation_name')!r}, but no user is recorded."
        return [ctx.alert(message, [event.trigger()], event_time=event.timestamp, details=_access_details(event))]


DEFAULT_SENSITIVE_COLUMNS = [
    "ssn", "social_security*", "national_id*", "passport*", "tax_id", "credit_card*", "card_number", "iban",
    "health*", "diagnos*", "medical*", "genetic*", "biometric*", "ethnic*", "race", "religio*", "political*",
    "sexual_orientation", "sex_life", "trade_union*",
]


class SensitiveOptions(AccessOptions):
    """Options of sensitive_column_access: which columns are sensitive, and who may read them."""

    columns: list[str] = DEFAULT_SENSITIVE_COLUMNS  # names or glob patterns, case-insensitive
    column_roles: dict[str, list[str]] = {}  # column name or pattern -> roles that may read it (sensitive too)
    allowed_roles: list[str] = []  # roles that may read every sensitive column
    allowed_users: list[str] = []  # users who may read every sensitive column
    role_field: str = "role"  # key of the trail's context that holds the user's role

    def missing(self) -> list[str]:
        said = {"column_roles", "allowed_roles", "allowed_users"} & self.given()
        return [] if said else ["column_roles or allowed_roles"]


class SensitiveColumnAccess(AccessRule):
    """Sensitive columns read by a user who is neither allowed by name nor by role.

    Off until the organisation says who may read them: ``column_roles`` (roles per column or
    pattern), ``allowed_roles`` (roles that may read all) and/or ``allowed_users``.
    """

    id = "sensitive_column_access"
    title = "Sensitive columns were read by a user or role that is not allowed to."
    basis = ("GDPR Art. 9 (special categories of data) with Art. 25(2) and Art. 32(4): only authorised persons, "
             "and only for what they need, may see such data.")
    Options = SensitiveOptions
    options: SensitiveOptions
    example = '{column_roles: {ssn: [fraud_team], "diagnos*": [clinician]}, allowed_roles: [dpo]}'
    severity = "high"
    regulation = "GDPR"
    article = "Art. 9"

    def __init__(self, options: OptionsArg = None, *, rule_id: str | None = None) -> None:
        super().__init__(options, rule_id=rule_id)
        patterns = [*self.options.columns, *self.options.column_roles]
        self._sensitive = re.compile("|".join(fnmatch.translate(c.lower()) for c in patterns) or "(?!)")
        self._roles = [(re.compile(fnmatch.translate(c.lower())), frozenset(roles))
                       for c, roles in self.options.column_roles.items()]
        self._everywhere = frozenset(self.options.allowed_roles)

    def _may_read(self, column: str, role: str | None) -> bool:
        if role is None:
            return False
        if role in self._everywhere:
            return True
        return any(role in roles and pattern.match(column.lower()) for pattern, roles in self._roles)

    def on_access(self, event: Event, ctx: RuleContext) -> list[Alert]:
        if event.user in stored_identities(tuple(self.options.allowed_users)):
            return []
        columns = [c for c in event.get("columns_accessed", []) if self._sensitive.match(c.lower())]
        if not columns:
            return []
        role = event.json_object("context").get(self.options.role_field)
        hits = [c for c in columns if not self._may_read(c, None if role is None else str(role))]
        if not hits:
            return []
        as_role = f" (role {role!r})" if role is not None else ""
        message = (f"{who(event, start=True)}{as_role} read sensitive column(s) {', '.join(hits)} of "
                   f"{event.get('dataset_name')!r} without being allowed to.")
        details = {**_access_details(event), "sensitive_columns": hits, "role": role}
        return [ctx.alert(message, [event.trigger()], event_time=event.timestamp, details=details)]


class HoursOptions(AccessOptions):
    """Options of access_outside_hours: the organisation's working hours, days and time zone."""

    start: dt.time | None = None  # required
    end: dt.time | None = None  # required; exclusive; before the start: spans midnight; equal to it: all day
    days: list[Weekday] = ["mon", "tue", "wed", "thu", "fri"]
    timezone: str | None = None  # required: an IANA name such as Europe/Berlin
    event_types: list[str] = ["data_access"]
    exempt_users: list[str] = []

    def missing(self) -> list[str]:
        return [name for name in ("timezone", "start", "end") if getattr(self, name) is None]

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}: use an IANA name such as Europe/Berlin") from None
        return value


class AccessOutsideHours(AccessRule):
    """Events (data accesses by default) outside the allowed days and hours of a time zone.

    Off until the organisation gives its working hours (``start``, ``end``, optionally
    ``days``) and ``timezone``: a default window in UTC alerts on every compliant evening.
    """

    id = "access_outside_hours"
    title = "Data was accessed outside the allowed working hours."
    basis = ("GDPR Art. 32(1)(b) and (d), security of processing: access at unusual times is a sign of misuse "
             "that the controller's measures must detect.")
    Options = HoursOptions
    options: HoursOptions
    example = '{timezone: Europe/Berlin, start: "07:00", end: "20:00", days: [mon, tue, wed, thu, fri]}'
    severity = "medium"
    regulation = "GDPR"
    article = "Art. 32(1)"

    def __init__(self, options: OptionsArg = None, *, rule_id: str | None = None) -> None:
        super().__init__(options, rule_id=rule_id)
        self.event_types = frozenset(self.options.event_types)
        self._zone = ZoneInfo(self.options.timezone or "UTC")
        self._days = frozenset(_WEEKDAYS.index(d) for d in self.options.days)

    def _allowed(self, local: dt.datetime) -> bool:
        start, end, now = self.options.start or dt.time(0), self.options.end or dt.time(0), local.time()
        if start == end:
            return local.weekday() in self._days
        if start < end:
            return local.weekday() in self._days and start <= now < end
        # Overnight window: the part after midnight belongs to the day the window started.
        if now >= start:
            return local.weekday() in self._days
        return now < end and (local.weekday() - 1) % 7 in self._days

    def on_access(self, event: Event, ctx: RuleContext) -> list[Alert]:
        if event.user in stored_identities(tuple(self.options.exempt_users)):
            return []
        local = micros_to_datetime(event.timestamp).astimezone(self._zone)
        if self._allowed(local):
            return []
        o = self.options
        allowed = f"{'/'.join(o.days)} {o.start or dt.time(0):%H:%M}-{o.end or dt.time(0):%H:%M} {o.timezone}"
        what = _read(event) if event.event_type == "data_access" else f"logged {event.event_type}"
        message = (f"{who(event, start=True)} {what} at {local:%a %H:%M} {o.timezone}, "
                   f"outside the allowed hours ({allowed}).")
        details = {**_access_details(event), "local_time": local.isoformat(), "allowed": allowed}
        return [ctx.alert(message, [event.trigger()], event_time=event.timestamp, details=details)]
