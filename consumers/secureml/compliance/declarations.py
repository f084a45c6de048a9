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
from typing import Annotated, Literal, TypeAlias, TypeVar

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

from secureml.audit.events import MAX_LIST_ITEMS, MAX_LONG

from .exceptions import InvalidArgumentError

Declaration = TypeVar("Declaration", bound=BaseModel)


def _valid_text(value: str) -> str:
    """The rules of the audit trail's text fields: not blank, valid Unicode (no lone surrogate)."""
    if not value.strip():
        raise ValueError("must not be blank")
    try:
        value.encode()
    except UnicodeEncodeError as error:
        raise ValueError(f"must be valid Unicode text: {value[error.start:error.end]!a} at index {error.start} "
                         "is a lone surrogate") from None
    return value


#: A declared name or phrase: a real string (bytes are not taken for text), not blank, valid Unicode.
Text: TypeAlias = Annotated[StrictStr, AfterValidator(_valid_text)]
Names: TypeAlias = Annotated[list[Text], Field(max_length=MAX_LIST_ITEMS)]
#: A period as text ("5 years") or a number of days.
Period: TypeAlias = Text | Annotated[StrictInt, Field(ge=0, le=MAX_LONG)]
#: Access controls as a description, a list of them, or a yes/no.
AccessControls: TypeAlias = Text | Names | StrictBool
#: A finite number (booleans are not numbers).
Number: TypeAlias = Annotated[StrictFloat, Field(allow_inf_nan=False)] | Annotated[StrictInt, Field(le=MAX_LONG)]

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

    purpose: Text | None = None
    required_columns: Names | None = None
    legal_basis: Text | None = None
    consent_obtained: StrictBool | None = None
    retention_period: Period | None = None
    data_storage_location: Text | None = None
    encryption: Text | StrictBool | None = None
    access_controls: AccessControls | None = None
    special_category_condition: SpecialCategoryCondition | None = None
    quasi_identifiers: Names | None = None


class PrivacyParameters(_Declaration):
    """Differential-privacy parameters a model was trained with."""

    epsilon: Annotated[Number, Field(gt=0)] | None = None
    delta: Annotated[Number, Field(ge=0, lt=1)] | None = None


class ModelDeclaration(_Declaration):
    """What the caller declares about a model (the keys of ``model_config``)."""

    trained_on_personal_data: StrictBool | None = None
    privacy_parameters: PrivacyParameters | None = None
    automated_decision: StrictBool | None = None
    explainability: Text | None = None
    human_review: StrictBool | None = None
    retention_period: Period | None = None
    access_controls: AccessControls | None = None
    training_data_anonymised: StrictBool | None = Field(
        default=None,
        validation_alias=AliasChoices("training_data_anonymised", "training_data_anonymized"),
    )
    supports_forget_request: StrictBool | None = None


class PipelineStep(_Declaration):
    """One step of a pipeline, in the order the pipeline runs it."""

    name: Text
    type: StepType
    legal_basis: Text | None = None
    contains_personal_data: StrictBool | None = None
    encrypted: StrictBool | None = None
    destination: Text | None = None

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
        path = _input_path(value, first["loc"], first["type"] == "missing")
        where = argument + "".join(f"[{part!r}]" for part in path)
        got = "" if first["type"] == "missing" else f" (got {type(first['input']).__name__})"
        raise InvalidArgumentError(
            f"{where}: {first['msg']}{got}. Fix {where} and run the audit again."
        ) from None


def _input_path(value: object, loc: tuple[int | str, ...], missing: bool) -> list[int | str]:
    """The part of a pydantic error location that is a path into the caller's input, without the
    names pydantic gives the members of a union ('function-after[...]', 'bool'); a missing key last."""
    path: list[int | str] = []
    for part in loc:
        if not _has(value, part):
            if missing and isinstance(value, Mapping):
                path.append(part)
            break
        value = value[part]  # type: ignore[index]  # _has checked it
        path.append(part)
    return path


def _has(value: object, part: int | str) -> bool:
    """Whether ``value[part]`` is a key of a mapping or an index of a list the caller gave."""
    if isinstance(value, Mapping):
        return part in value
    return isinstance(value, (list, tuple)) and isinstance(part, int) and 0 <= part < len(value)
