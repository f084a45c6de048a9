"""Rules across operations, through dataset names: training on unprotected data, privacy budget spent."""

from __future__ import annotations

import fnmatch
import math
from typing import Any

from pydantic import Field, model_validator

from secureml.alerting import timers
from secureml.alerting.alert import Alert, Trigger
from secureml.alerting.event import Event
from secureml.alerting.periods import Duration
from secureml.alerting.rule import OptionsArg, Rule, RuleContext, RuleOptions, who
from secureml.audit.timeutil import micros_to_iso

PROTECTING_TRANSFORMATIONS = [
    "anonymization", "anonymisation", "anonymize", "anonymise", "pseudonymization", "pseudonymisation",
    "pseudonymize", "pseudonymise", "k_anonymity", "k-anonymity", "differential_privacy", "synthetic_data",
]


class LineageOptions(RuleOptions):
    """Options of training_on_unprotected_data."""

    protecting_transformations: list[str] = PROTECTING_TRANSFORMATIONS  # case-insensitive
    inherit: bool = True  # any transformation of a protected dataset gives a protected dataset
    exempt_datasets: list[str] = []  # names or glob patterns of datasets with no personal data
    private_training: bool = True  # a training with a differential-privacy epsilon protects its data itself
    epsilon_parameter: str = "epsilon"  # key in privacy_parameters
    idle_timeout: Duration = 1.0  # a partition silent this long no longer holds the watermark back

    @model_validator(mode="before")
    @classmethod
    def _no_grace(cls, data: Any) -> Any:
        if isinstance(data, dict) and "grace" in data:
            raise ValueError("'grace' is gone: the rule now judges a training once every partition has been read "
                             "past its time; set idle_timeout (default 1s) for partitions that receive nothing")
        return data


class TrainingOnUnprotectedData(Rule):
    """A model trained on a dataset that no anonymising or pseudonymising transformation produced.

    Lineage is followed through dataset names across all operations: a ``data_transformation``
    whose type protects makes its ``output_data`` a protected dataset (from that time on), and
    with ``inherit`` any transformation of a protected dataset does too. With
    ``private_training`` a training that declares a differential-privacy epsilon (DP-SGD and
    the like, whose budget ``privacy_budget_exceeded`` watches) protects the data itself. Events of other
    operations may sit on other partitions, so a training is judged on event time: as soon as
    the watermark (``ctx.watermark``) has passed it, i.e. every partition of the log has been
    read past the training's time, and never before. A partition that sent nothing for
    ``idle_timeout`` seconds counts as having passed the clock minus ``idle_timeout``.
    """

    id = "training_on_unprotected_data"
    title = "A model was trained on data that was never anonymised or pseudonymised."
    basis = ("GDPR Art. 25(1), data protection by design (pseudonymisation is its named example), with Art. 89(1) "
             "and Art. 5(1)(c): training data should be de-identified first.")
    Options = LineageOptions
    options: LineageOptions
    event_types = frozenset({"data_transformation", "model_training"})
    severity = "high"
    regulation = "GDPR"
    article = "Art. 25(1)"

    def __init__(self, options: OptionsArg = None, *, rule_id: str | None = None) -> None:
        super().__init__(options, rule_id=rule_id)
        self._protecting = frozenset(t.lower() for t in self.options.protecting_transformations)

    def on_event(self, event: Event, ctx: RuleContext) -> list[Alert]:
        if event.event_type == "data_transformation":
            output = str(event.get("output_data", ""))
            produced: list[list[Any]] = ctx.state.setdefault("produced", {}).setdefault(output, [])
            step = [str(event.get("input_data", "")), str(event.get("transformation_type", "")).lower(),
                    event.timestamp]
            if not any(p[0] == step[0] and p[1] == step[1] and p[2] <= step[2] for p in produced):
                produced.append(step)
            return []
        if self.options.private_training and _positive_number(
                event.json_object("privacy_parameters").get(self.options.epsilon_parameter)):
            return []
        dataset = str(event.get("dataset_name", ""))
        timers.schedule(ctx.state, event.event_id, {
            "due": event.timestamp, "dataset": dataset,
            "at": event.timestamp, "trigger": event.trigger().to_dict(), "who": who(event, start=True),
            "model_type": event.get("model_type"),
        })
        return []

    def on_tick(self, now: int, ctx: RuleContext) -> list[Alert]:
        if not ctx.state.get("timers"):
            return []
        alerts = []
        for key, entry in timers.expired(ctx.state, ctx.watermark(self.options.idle_timeout)):
            if self._protected(ctx.state.get("produced", {}), entry["dataset"], entry["at"], set()):
                continue
            message = (f"{entry['who']} trained a {entry['model_type']} model on {entry['dataset']!r}, "
                       "which no anonymisation or pseudonymisation produced.")
            details = {"dataset_name": entry["dataset"], "trained_at": micros_to_iso(entry["at"]),
                       "model_type": entry["model_type"],
                       "protecting_transformations": sorted(self._protecting)}
            alerts.append(ctx.alert(message, [Trigger.from_dict(entry["trigger"])], event_time=entry["at"],
                                    identity=[key], details=details))
        return alerts

    def _protected(self, produced: dict[str, list[list[Any]]], dataset: str, before: int, seen: set[str]) -> bool:
        """True when ``dataset`` was made by a protecting transformation (or from a protected input) by ``before``."""
        if any(fnmatch.fnmatchcase(dataset, p) for p in self.options.exempt_datasets):
            return True
        seen.add(dataset)
        for source, kind, at in produced.get(dataset, []):
            if at > before:
                continue
            if kind in self._protecting:
                return True
            if self.options.inherit and source not in seen and self._protected(produced, source, at, seen):
                return True
        return False


def _positive_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


class BudgetOptions(RuleOptions):
    """Options of privacy_budget_exceeded."""

    budget: float = Field(10.0, gt=0)  # total epsilon per dataset
    datasets: dict[str, float] = {}  # per-dataset budgets, overriding ``budget``
    parameter: str = "epsilon"  # key in privacy_parameters


class PrivacyBudgetExceeded(Rule):
    """The epsilons of all trainings on a dataset add up (sequential composition) past its budget.

    Alerts once per dataset, at the training that crosses the budget (the id names the
    dataset, so the alert is the same whichever partition is read first).
    """

    id = "privacy_budget_exceeded"
    title = "The cumulative differential-privacy budget (epsilon) of a dataset was exceeded."
    basis = ("GDPR Art. 25(1) and Art. 32(1): the declared differential-privacy protection no longer holds once the "
             "total epsilon spent on a dataset exceeds its budget.")
    Options = BudgetOptions
    options: BudgetOptions
    event_types = frozenset({"model_training"})
    severity = "high"
    regulation = "GDPR"
    article = "Art. 25(1)"

    def on_event(self, event: Event, ctx: RuleContext) -> list[Alert]:
        declared = event.json_object("privacy_parameters")
        if self.options.parameter not in declared:
            return []
        epsilon = declared[self.options.parameter]
        dataset = str(event.get("dataset_name", ""))
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not math.isfinite(epsilon) \
                or epsilon < 0:
            # Never a silent bypass: a negative epsilon would give budget back, NaN or infinity would
            # escape the sum. The declaration itself is the finding.
            message = (f"A training on {dataset!r} by {who(event)} declares {self.options.parameter} = "
                       f"{epsilon!r:.40}, which is no privacy budget (it must be a finite number >= 0): its spend "
                       "cannot be counted.")
            return [ctx.alert(message, [event.trigger()], event_time=event.timestamp,
                              identity=[dataset, "invalid", event.event_id],
                              details={"dataset_name": dataset, "declared_epsilon": repr(epsilon)[:40]})]
        dataset = str(event.get("dataset_name", ""))
        spent = ctx.state.setdefault(dataset, {"epsilon": 0.0, "recent": [], "alerted": False})
        spent["epsilon"] += float(epsilon)
        spent["recent"] = [*spent["recent"], event.trigger().to_dict()][-20:]
        budget = self.options.datasets.get(dataset, self.options.budget)
        if spent["epsilon"] <= budget or spent["alerted"]:
            return []
        spent["alerted"] = True
        message = (f"Trainings on {dataset!r} have spent epsilon {spent['epsilon']:g}, over its privacy budget of "
                   f"{budget:g}; the last was by {who(event)}.")
        details = {"dataset_name": dataset, "epsilon_spent": spent["epsilon"], "budget": budget,
                   "last_epsilon": float(epsilon)}
        triggers = [Trigger.from_dict(t) for t in spent["recent"]]
        return [ctx.alert(message, triggers, event_time=event.timestamp, identity=[dataset, str(budget)],
                          details=details)]
