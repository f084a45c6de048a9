"""The checks run on a pipeline's steps, each citing the provision it tests.

A pipeline is a list of steps in the order they run, each a dict with ``name`` and
``type`` (``source``, ``transformation``, ``anonymisation``, ``pseudonymisation``,
``training``, ``evaluation``, ``inference`` or ``export``) and optionally
``contains_personal_data``, ``legal_basis`` (sources), ``encrypted`` and ``destination``
(exports). Steps are assumed to carry personal data unless they say otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

from .checks import Check, Finding, Outcome
from .declarations import LEGAL_BASES, PipelineStep, normalised_basis
from .report import JSON

PROTECTIVE_STEPS = ("anonymisation", "pseudonymisation")


@dataclass(frozen=True)
class PipelineContext:
    """What the pipeline checks judge: the declared steps and the regulation."""

    regulation: str
    steps: tuple[PipelineStep, ...]

    def personal(self, step_type: str) -> list[tuple[int, PipelineStep]]:
        """Return the steps of ``step_type`` that may carry personal data, with their index."""
        return [
            (index, step)
            for index, step in enumerate(self.steps)
            if step.type == step_type and step.contains_personal_data is not False
        ]


def anonymisation_before_training(context: PipelineContext) -> Outcome:
    """Check that personal data is anonymised or pseudonymised before any model trains on it."""
    findings = []
    checked: list[JSON] = []
    for index, training in context.personal("training"):
        sources = [step.name for i, step in context.personal("source") if i < index]
        protected = any(step.type in PROTECTIVE_STEPS for step in context.steps[:index])
        checked.append({"step": training.name, "personal_sources": sources, "protected": protected})
        if sources and not protected:
            findings.append(Finding(
                "high", f"step '{training.name}'",
                f"Step '{training.name}' trains on personal data from {sources} that no earlier "
                "step anonymises or pseudonymises.",
                "Add an anonymisation step (e.g. k-anonymity, or removal of identifiers) before "
                "training, or mark the sources contains_personal_data=False if they hold none.",
            ))
    return Outcome(findings=tuple(findings), details={"training_steps": checked})


def source_legal_basis(context: PipelineContext) -> Outcome:
    """Check that every source of personal data declares a recognised legal basis."""
    allowed = LEGAL_BASES[context.regulation]
    sources = [step for _, step in context.personal("source")]
    findings = []
    for step in sources:
        basis = normalised_basis(step.legal_basis)
        if basis in allowed:
            continue
        problem = (
            "declares no legal basis" if basis is None
            else f"declares {step.legal_basis!r}, not a recognised basis"
        )
        findings.append(Finding(
            "medium", f"step '{step.name}'",
            f"Source step '{step.name}' reads personal data but {problem}.",
            f"Declare one of {list(allowed)} as the step's 'legal_basis'.",
        ))
    return Outcome(findings=tuple(findings), details={"sources": [step.name for step in sources]})


def export_safeguards(context: PipelineContext) -> Outcome:
    """Check that every export of personal data is encrypted and names its destination."""
    exports = [step for _, step in context.personal("export")]
    findings = []
    for step in exports:
        declared = {"encryption": step.encrypted is True, "destination": step.destination is not None}
        missing = [name for name, present in declared.items() if not present]
        if missing:
            findings.append(Finding(
                "medium", f"step '{step.name}'",
                f"Export step '{step.name}' sends personal data without a declared "
                f"{' or '.join(missing)}.",
                "Encrypt the export in transit and at rest, name where it goes, and declare "
                "'encrypted': True and 'destination' on the step.",
            ))
    return Outcome(findings=tuple(findings), details={"exports": [step.name for step in exports]})


PIPELINE_CHECKS: tuple[Check[PipelineContext], ...] = (
    Check("anonymisation_before_training",
          {"GDPR": "Art. 25(1), Art. 89(1)", "CCPA": "§1798.140(m)", "HIPAA": "45 CFR §164.514(a)"},
          anonymisation_before_training),
    Check("source_legal_basis", {"GDPR": "Art. 6(1)", "HIPAA": "45 CFR §164.502(a), §164.508"},
          source_legal_basis),
    Check("export_safeguards", {"GDPR": "Art. 32(1), Art. 44", "CCPA": "§1798.100(e)",
                                "HIPAA": "45 CFR §164.312(e)(1)"}, export_safeguards),
)
