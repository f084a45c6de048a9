"""The rule interface: what a built-in or custom rule implements, and what it is given.

A rule is a subclass of ``Rule`` with a unique ``id``, its legal basis (``regulation``,
``article``, ``basis``), a default ``severity``, the ``event_types`` it wants (None = all) and
an ``Options`` model (a pydantic ``RuleOptions`` subclass) validated from the rules file.
The alerter calls ``on_event(event, ctx)`` for every matching event and ``on_tick(now, ctx)``
after every poll once it has caught up with the log (``now`` = the injectable clock, UTC
micros), so deadlines fire when time passes, not only when the next event comes.

Rules that correlate events of several operations (which may sit on different partitions)
decide on event time: ``ctx.watermark(idle_timeout)`` is the event time that every partition
of the log has been read past (see ``secureml.alerting.watermark``).

Some rules need facts only the organisation knows (working hours, who may read what,
thresholds): their ``Options.missing()`` names what is not given yet, and such a rule stays
off until it is configured (``active``); ``example`` shows how, for ``alerts --list-rules``.

Both return alerts made with ``ctx.alert(...)``. A rule keeps everything it remembers in
``ctx.state``, a JSON-serialisable dict that the alerter saves with the log positions at every
checkpoint, so state survives restarts; keep it bounded (prune what can no longer matter).
Alert ids are derived from the rule id and the triggering event ids (or an explicit
``identity``), so a replay produces the same ids and the alerter publishes each alert once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from secureml.alerting.alert import Alert, Trigger, alert_id
from secureml.alerting.event import Event
from secureml.alerting.exceptions import RuleConfigError
from secureml.alerting.watermark import Watermarks

Severity = Literal["low", "medium", "high", "critical"]


class RuleOptions(BaseModel):
    """Options every rule has; a rule's own Options subclass adds its settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool | None = None  # None: on, once every option the rule needs is given
    severity: Severity | None = None
    regulation: str | None = None
    article: str | None = None

    def missing(self) -> list[str]:
        """Options the organisation must give before the rule can run (none for most rules)."""
        return []

    def given(self) -> set[str]:
        """The options set explicitly (in the rules file or the constructor), besides ``enabled``."""
        return set(self.model_fields_set) - {"enabled"}


OptionsArg = RuleOptions | Mapping[str, Any] | None  # a rule's options: validated already, or a dict of them


class RuleContext:
    """What a rule gets besides the event: its persistent ``state`` and the alert factory."""

    __slots__ = ("rule", "state", "clock", "watermarks")

    def __init__(self, rule: Rule, state: dict[str, Any], clock: Callable[[], int],
                 watermarks: Watermarks | None = None) -> None:
        self.rule = rule
        self.state = state
        self.clock = clock
        self.watermarks = watermarks if watermarks is not None else Watermarks(clock)

    def watermark(self, idle_timeout: float) -> int:
        """UTC micros such that every event at or before it has been read, on every partition of the log.

        A partition that has sent nothing for ``idle_timeout`` seconds since the alerter caught up
        counts as having passed the clock minus ``idle_timeout`` (see ``Watermarks.watermark``).
        """
        return self.watermarks.watermark(idle_timeout)

    def alert(
        self,
        message: str,
        triggers: Sequence[Trigger],
        *,
        event_time: int,
        identity: Iterable[str] | None = None,
        details: dict[str, Any] | None = None,
        severity: str | None = None,
        regulation: str | None = None,
        article: str | None = None,
    ) -> Alert:
        """An alert of this rule; its id hashes the rule id with ``identity`` (default: the trigger event ids).

        ``event_time`` is the triggering event's time, or the deadline for timer alerts (UTC micros).
        """
        if not triggers:
            raise ValueError(f"rule {self.rule.rule_id}: an alert needs at least one triggering event")
        rule = self.rule
        parts = tuple(identity) if identity is not None else tuple(t.event_id for t in triggers)
        return Alert(
            alert_id=alert_id(rule.rule_id, parts),
            rule_id=rule.rule_id,
            severity=severity or rule.severity,
            regulation=rule.regulation if regulation is None else regulation,
            article=rule.article if article is None else article,
            message=message,
            operation_id=triggers[-1].operation_id,
            created_at=self.clock(),
            event_time=event_time,
            triggers=tuple(triggers),
            details=details or {},
        )


class Rule:
    """Base class of alerting rules; see the module docstring for the contract."""

    id: ClassVar[str] = ""
    title: ClassVar[str] = ""  # what the rule finds, one sentence
    basis: ClassVar[str] = ""  # why it matters legally, one sentence
    Options: ClassVar[type[RuleOptions]] = RuleOptions
    example: ClassVar[str] = ""  # rules-file options that configure what the rule needs, e.g. "{threshold: 5000}"
    event_types: frozenset[str] | None = None  # None: every event
    severity: str = "medium"
    regulation: str = ""
    article: str = ""

    def __init__(self, options: OptionsArg = None, *, rule_id: str | None = None) -> None:
        """``options``: an ``Options`` instance, or a dict of them (validated: RuleConfigError names the field)."""
        self.rule_id = rule_id or self.id or type(self).__name__
        self.options = self._validated(options)
        self.severity = self.options.severity or self.severity
        self.regulation = self.options.regulation if self.options.regulation is not None else self.regulation
        self.article = self.options.article if self.options.article is not None else self.article
        missing = self.options.missing()
        if missing and (self.options.enabled or self.options.given()):
            raise RuleConfigError(self.needs(missing), rule=self.rule_id, field=missing[0].split()[0],
                                  call=f"{type(self).__name__}(...)")

    def _validated(self, options: OptionsArg) -> RuleOptions:
        if options is None:
            return self.Options()
        if isinstance(options, RuleOptions):
            return options
        try:
            return self.Options.model_validate(dict(options))
        except ValidationError as exc:
            first = exc.errors()[0]
            more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
            raise RuleConfigError(f"{first['msg']}{more}", rule=self.rule_id, call=f"{type(self).__name__}(...)",
                                  field=".".join(map(str, first["loc"])) or None) from None

    @property
    def active(self) -> bool:
        """True when the rule runs: not switched off, and given every option it needs."""
        return self.options.enabled is not False and not self.options.missing()

    def needs(self, missing: list[str] | None = None) -> str:
        """What is missing before this rule can run, and how to give it."""
        missing = self.options.missing() if missing is None else missing
        example = f"; e.g. rules: {{{self.rule_id}: {self.example}}}" if self.example else ""
        return f"needs {', '.join(missing)} (facts only your organisation knows) before it can run{example}"

    def on_event(self, event: Event, ctx: RuleContext) -> list[Alert]:
        """Alerts raised by one event (called in log order per operation)."""
        return []

    def on_tick(self, now: int, ctx: RuleContext) -> list[Alert]:
        """Alerts whose time has come (deadlines); ``now`` is UTC micros from the alerter's clock."""
        return []

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rule_id={self.rule_id!r}, severity={self.severity!r})"


def who(event: Event, *, start: bool = False) -> str:
    """The event's user for a message: "user 'alice'" or "an unidentified user" (capitalised at a sentence start)."""
    text = f"user {event.user!r}" if event.user else "an unidentified user"
    return text[0].upper() + text[1:] if start else text
