"""A compliance check that failed."""

from __future__ import annotations

from secureml.alerting.alert import Alert
from secureml.alerting.event import Event
from secureml.alerting.rule import Rule, RuleContext


class FailedComplianceCheck(Rule):
    """A ``compliance_check`` event whose result is False; the alert names the regulation checked.

    The article comes from the check's ``details["article"]`` when given; for a GDPR check
    without one, it is the rule's article (accountability).
    """

    id = "failed_compliance_check"
    title = "A compliance check failed."
    basis = ("GDPR Art. 5(2) and Art. 24, accountability: a failed check is a known gap the controller must act on "
             "(and the same holds for the regulation the check names).")
    event_types = frozenset({"compliance_check"})
    severity = "high"
    regulation = "GDPR"
    article = "Art. 5(2)"

    def on_event(self, event: Event, ctx: RuleContext) -> list[Alert]:
        if event.get("result") is not False:
            return []
        regulation = str(event.get("regulation", "")) or self.regulation
        details = event.json_object("details")
        named = details.get("article")
        article = str(named) if named else (self.article if regulation.upper() == self.regulation.upper() else "")
        message = (f"The {regulation} compliance check {event.get('check_type')!r} failed in operation "
                   f"{event.get('operation_name')!r}.")
        return [ctx.alert(message, [event.trigger()], event_time=event.timestamp, regulation=regulation,
                          article=article, details={"check_type": event.get("check_type"), "check_details": details})]
