"""The checks run on a model configuration, each citing the provision it tests.

``model_config`` keys the checks read (all optional; other keys are ignored):
``trained_on_personal_data``, ``privacy_parameters`` (``epsilon``, ``delta``),
``automated_decision``, ``explainability``, ``human_review``, ``retention_period``,
``access_controls``, ``training_data_anonymised`` and ``supports_forget_request``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .checks import Advice, Check, Finding, Outcome, only_when, undeclared
from .declarations import ModelDeclaration
from .report import JSON

#: Above this epsilon a differential-privacy guarantee is too weak to count as a safeguard.
WEAK_EPSILON = 10.0
#: Up to this epsilon the guarantee is strong; in between it deserves a second look.
STRONG_EPSILON = 1.0


@dataclass(frozen=True)
class ModelContext:
    """What the model checks judge: the declared configuration and the regulation."""

    regulation: str
    model: ModelDeclaration


def _may_hold_personal_data(context: ModelContext) -> bool:
    return context.model.trained_on_personal_data is not False


_when_personal = only_when(_may_hold_personal_data, "model_config['trained_on_personal_data'] is False")


@_when_personal
def privacy_parameters(context: ModelContext) -> Outcome:
    """Check that training carries a differential-privacy guarantee that is not too weak."""
    parameters = context.model.privacy_parameters
    epsilon = parameters.epsilon if parameters else None
    details: dict[str, JSON] = {"epsilon": epsilon, "delta": parameters.delta if parameters else None}
    if epsilon is None:
        finding = Finding(
            "medium", "model_config['privacy_parameters']",
            "No differential-privacy epsilon is declared: nothing bounds what the model "
            "reveals about individual training records.",
            "Train with differential privacy (e.g. DP-SGD) and declare "
            "model_config['privacy_parameters'] = {'epsilon': 1.0, 'delta': 1e-5}.",
        )
        return Outcome(findings=(finding,), details=details)
    if epsilon > WEAK_EPSILON:
        finding = Finding(
            "medium", "model_config['privacy_parameters']",
            f"epsilon = {epsilon:g} gives a weak differential-privacy guarantee.",
            f"Retrain with epsilon at most {WEAK_EPSILON:g}, ideally at most {STRONG_EPSILON:g}.",
        )
        return Outcome(findings=(finding,), details=details)
    advice: tuple[Advice, ...] = ()
    if epsilon > STRONG_EPSILON:
        advice = (Advice(
            "model_config['privacy_parameters']",
            f"epsilon = {epsilon:g} is a moderate differential-privacy guarantee.",
            f"Consider epsilon at most {STRONG_EPSILON:g} if utility allows.",
        ),)
    return Outcome(advice=advice, details=details)


def automated_decisions(context: ModelContext) -> Outcome:
    """Check that automated decisions about people can be explained and reviewed by a human."""
    model = context.model
    details: dict[str, JSON] = {
        "automated_decision": model.automated_decision,
        "explainability": model.explainability,
        "human_review": model.human_review,
    }
    if model.automated_decision is None:
        advice = Advice(
            "model_config['automated_decision']",
            "The configuration does not say whether the model decides about people on its own.",
            "Declare model_config['automated_decision'] = True or False.",
        )
        return Outcome(advice=(advice,), details=details)
    if not model.automated_decision:
        return Outcome(details=details)
    findings = []
    if model.explainability is None:
        findings.append(Finding(
            "high", "model_config['explainability']",
            "The model makes automated decisions but no explanation method is declared.",
            "Provide meaningful information about the logic involved (e.g. SHAP values per "
            "decision) and declare it as model_config['explainability'].",
        ))
    if model.human_review is not True:
        findings.append(Finding(
            "high", "model_config['human_review']",
            "The model makes automated decisions without human review.",
            "Let people obtain human intervention and contest a decision; then declare "
            "model_config['human_review'] = True.",
        ))
    return Outcome(findings=tuple(findings), details=details)


@_when_personal
def retention(context: ModelContext) -> Outcome:
    """Check that a retention period is declared for the model and its training data."""
    period = context.model.retention_period
    if period is None:
        return undeclared(
            "model_config['retention_period']", "medium",
            "a model trained on personal data may be kept no longer than necessary.",
            "Declare it, e.g. model_config['retention_period'] = '3 years'.",
        )
    return Outcome(details={"declared": True, "retention_period": period})


@_when_personal
def access_controls(context: ModelContext) -> Outcome:
    """Check that access controls over the model are declared."""
    if not context.model.access_controls:
        return undeclared(
            "model_config['access_controls']", "medium",
            "a model can leak its training data to whoever can query it.",
            "Restrict who may query or download the model and declare how, e.g. "
            "model_config['access_controls'] = 'role-based, audited'.",
        )
    return Outcome(details={"declared": True})


@_when_personal
def training_data_anonymised(context: ModelContext) -> Outcome:
    """Check that the model was trained on anonymised (de-identified) data."""
    anonymised = context.model.training_data_anonymised
    if anonymised is None:
        return undeclared(
            "model_config['training_data_anonymised']", "medium",
            "it is unknown whether the model learnt from identifiable data.",
            "Declare model_config['training_data_anonymised'] = True once the training data "
            "is anonymised.",
        )
    if anonymised:
        return Outcome(details={"training_data_anonymised": True})
    finding = Finding(
        "high" if context.regulation == "HIPAA" else "medium",
        "model_config['training_data_anonymised']",
        "The model was trained on data that was not anonymised.",
        "Anonymise or de-identify the training data (see audit_dataset) and retrain.",
    )
    return Outcome(findings=(finding,), details={"training_data_anonymised": False})


@_when_personal
def right_to_erasure(context: ModelContext) -> Outcome:
    """Check that the model can honour requests to erase a person's data."""
    if context.model.supports_forget_request is True:
        return Outcome(details={"supports_forget_request": True})
    finding = Finding(
        "medium", "model_config['supports_forget_request']",
        "The model cannot remove what it learnt from a person who asks to be forgotten.",
        "Provide retraining or machine unlearning for erasure requests and declare "
        "model_config['supports_forget_request'] = True.",
    )
    details: dict[str, JSON] = {"supports_forget_request": context.model.supports_forget_request}
    return Outcome(findings=(finding,), details=details)


MODEL_CHECKS: tuple[Check[ModelContext], ...] = (
    Check("privacy_parameters", {"GDPR": "Art. 25(1)", "CCPA": "§1798.140(m)",
                                 "HIPAA": "45 CFR §164.514(b)(1)"}, privacy_parameters),
    Check("automated_decisions", {"GDPR": "Art. 22(3), Art. 13(2)(f)",
                                  "CCPA": "§1798.185(a)(16)"}, automated_decisions),
    Check("retention", {"GDPR": "Art. 5(1)(e)", "CCPA": "§1798.100(a)(3)"}, retention),
    Check("access_controls", {"GDPR": "Art. 32(1)", "CCPA": "§1798.100(e)",
                              "HIPAA": "45 CFR §164.312(a)(1)"}, access_controls),
    Check("training_data_anonymised", {"GDPR": "Art. 25(1), Art. 89(1)", "CCPA": "§1798.140(m)",
                                       "HIPAA": "45 CFR §164.514(a)"}, training_data_anonymised),
    Check("right_to_erasure", {"GDPR": "Art. 17(1)", "CCPA": "§1798.105"}, right_to_erasure),
)
