"""What callers declare about a dataset, a model or a pipeline, validated on the way in.

Dataset ``metadata`` keys (all optional; unknown keys are kept and ignored):
``purpose``, ``required_columns``, ``legal_basis``, ``consent_obtained``,
``retention_period``, ``data_storage_location``, ``encryption``, ``access_controls``,
``special_category_condition`` (the GDPR Art. 9(2) condition relied on) and
``quasi_identifiers`` (overrides the detected ones for k-anonymity).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal, TypeAlias, TypeVar

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
)

from .exceptions import InvalidArgumentError

Declaration = TypeVar("Declaration", bound=BaseModel)

SpecialCategoryCondition: TypeAlias = Literal[
    "explicit_consent",  # Art. 9(2)(a)
    "employment",  # (b)
    "vital_interests",  # (c)
    "not_for_profit",  # (d)
    "made_public",  # (e)
    "legal_claims",  # (f)
    "substantial_public_interest",  # (g)
    "health_care",  # (h)
    "public_health",  # (i)
    "research",  # (j)
]
#: The legal bases (GDPR Art. 6(1)) and permitted uses (HIPAA §164.502(a)) a caller may declare.
LEGAL_BASES: Mapping[str, tuple[str, ...]] = {
    "GDPR": ("consent", "contract", "legal_obligation", "vital_interests", "public_task",
             "legitimate_interests"),
    "HIPAA": ("treatment", "payment", "health_care_operations", "authorisation",
              "research_waiver", "public_health", "required_by_law", "limited_data_set"),
}
StepType: TypeAlias = Literal[
    "source", "transformation", "anonymisation", "pseudonymisation", "training",
    "evaluation", "inference", "export",
]


def normalised_basis(basis: str | None) -> str | None:
    """Return a declared legal basis in canonical spelling: lower case, underscores, -isation."""
    if basis is None:
        return None
    return re.sub(r"[\s-]+", "_", basis.strip().lower()).replace("ization", "isation")


class _Declaration(BaseModel):
    """Common settings: unknown keys allowed, values immutable once validated."""

    model_config = ConfigDict(extra="allow", frozen=True)


class DatasetMetadata(_Declaration):
    """What the caller declares about a dataset's processing."""

    purpose: str | None = Field(default=None, min_length=1)
    required_columns: list[str] | None = None
    legal_basis: str | None = Field(default=None, min_length=1)
    consent_obtained: StrictBool | None = None
    retention_period: str | int | None = None
    data_storage_location: str | None = Field(default=None, min_length=1)
    encryption: str | StrictBool | None = None
    access_controls: str | list[str] | StrictBool | None = None
    special_category_condition: SpecialCategoryCondition | None = None
    quasi_identifiers: list[str] | None = None


class PrivacyParameters(_Declaration):
    """Differential-privacy parameters a model was trained with."""

    epsilon: float | None = Field(default=None, gt=0)
    delta: float | None = Field(default=None, ge=0, lt=1)


class ModelDeclaration(_Declaration):
    """What the caller declares about a model (the keys of ``model_config``)."""

    trained_on_personal_data: StrictBool | None = None
    privacy_parameters: PrivacyParameters | None = None
    automated_decision: StrictBool | None = None
    explainability: str | None = Field(default=None, min_length=1)
    human_review: StrictBool | None = None
    retention_period: str | int | None = None
    access_controls: str | list[str] | StrictBool | None = None
    training_data_anonymised: StrictBool | None = Field(
        default=None,
        validation_alias=AliasChoices("training_data_anonymised", "training_data_anonymized"),
    )
    supports_forget_request: StrictBool | None = None


class PipelineStep(_Declaration):
    """One step of a pipeline, in the order the pipeline runs it."""

    name: str = Field(min_length=1)
    type: StepType
    legal_basis: str | None = Field(default=None, min_length=1)
    contains_personal_data: StrictBool | None = None
    encrypted: StrictBool | None = None
    destination: str | None = Field(default=None, min_length=1)

    @field_validator("type", mode="before")
    @classmethod
    def _british_spelling(cls, value: object) -> object:
        """Accept 'anonymization' and 'pseudonymization' for the -isation spellings."""
        return value.lower().replace("ization", "isation") if isinstance(value, str) else value


def parse(declaration: type[Declaration], value: object, argument: str) -> Declaration:
    """Validate a caller's mapping, naming the offending field in any error."""
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise InvalidArgumentError(
            f"{argument} must be a dict; got {type(value).__name__}. Pass e.g. "
            f"{argument}={{'purpose': 'model_training'}}."
        )
    try:
        return declaration.model_validate(dict(value))
    except ValidationError as error:
        first = error.errors()[0]
        where = argument + "".join(f"[{part!r}]" for part in first["loc"])
        got = "" if first["type"] == "missing" else f" (got {type(first['input']).__name__})"
        raise InvalidArgumentError(
            f"{where}: {first['msg']}{got}. Fix {where} and run the audit again."
        ) from None
