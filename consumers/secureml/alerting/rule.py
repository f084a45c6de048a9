"""The rule interface: what a built-in or custom rule implements, and what it is given.

A rule is a subclass of ``Rule`` with a unique ``id``, its legal basis (``regulation``,
``article``, ``basis``), a default ``severity``, the ``event_types`` it wants (None = all) and
an ``Options`` model (a pydantic ``RuleOptions`` subclass) validated from the rules file.
The alerter calls ``on_event(event, ctx)`` for every matching event and ``on_tick(now, ctx)``
after every poll once it has caught up with the log (``now`` = the injectable clock, UTC
micros), so deadlines fire when time passes, not only when the next event comes.

Both return alerts made with ``ctx.alert(...)``. A rule keeps everything it remembers in
``ctx.state``, a JSON-serialisable dict that the alerter saves with the log positions after
every batch, so state survives restarts; keep it bounded (prune what can no longer matter).
Alert ids are derived from the rule id and the triggering event ids (or an explicit
``identity``), so a replay produces the same ids and the alerter publishes each alert once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from secureml.alerting.alert import Alert, Trigger, alert_id
from secureml.alerting.event import Event

Severity = Literal["low", "medium", "high", "critical"]


class RuleOptions(BaseModel):
    """Options every rule has; a rule's own Options subclass adds its settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    severity: Severity | None = None
    regulation: str | None = None
    article: str | None = None


class RuleContext:
    """What a rule gets besides the event: its persistent ``state`` and the alert factory."""

    __slots__ = ("rule", "state", "clock")

    def __init__(self, rule: Rule, state: dict[str, Any], clock: Callable[[], int]) -> None:
        self.rule = rule
        self.state = state
        self.clock = clock

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
    event_types: frozenset[str] | None = None  # None: every event
    severity: str = "medium"
    regulation: str = ""
    article: str = ""

    def __init__(self, options: RuleOptions | None = None, *, rule_id: str | None = None) -> None:
        self.options = options if options is not None else self.Options()
        self.rule_id = rule_id or self.id or type(self).__name__
        self.severity = self.options.severity or self.severity
        self.regulation = self.options.regulation if self.options.regulation is not None else self.regulation
        self.article = self.options.article if self.options.article is not None else self.article

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
