"""The ComplianceAuditor: audit datasets, model configurations and pipelines against one regulation."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from secureml.audit.config import resolve_config
from secureml.audit.events import MAX_LIST_ITEMS, MAX_LONG, text
from secureml.audit.exceptions import AuditConfigError, AuditValidationError, naming_the_call

from .checks import run_checks
from .dataset_checks import DATASET_CHECKS, DatasetContext
from .declarations import DatasetMetadata, ModelDeclaration, PipelineStep, parse
from .exceptions import InvalidArgumentError
from .model_checks import MODEL_CHECKS, ModelContext
from .pipeline_checks import PIPELINE_CHECKS, PipelineContext
from .profile import profile_dataset
from .regulations import normalise_regulation
from .report import JSON, ComplianceReport
from .source import open_dataset
from .trail import Recording, TrailSettings, auditor_identity, recording

if TYPE_CHECKING:
    from .source import Dataset

DEFAULT_K_THRESHOLD = 5
DEFAULT_SAMPLE_ROWS = 100_000


def _require_name(argument: str, value: object) -> str:
    """Return ``value`` when it is a non-empty string of valid Unicode, else raise naming ``argument``."""
    try:
        return text(value, argument, "")
    except AuditValidationError as error:
        raise InvalidArgumentError(
            f"{argument} {error.rule}; got {value!r:.80}. Pass the name the audited "
            f"object is known by, e.g. {argument}='patient_records'."
        ) from None


def _require_int(argument: str, value: object, minimum: int) -> int:
    """Return ``value`` when it is an integer from ``minimum`` to 2**63-1, else raise naming it."""
    if isinstance(value, int) and not isinstance(value, bool) and minimum <= value <= MAX_LONG:
        return value
    raise InvalidArgumentError(f"{argument} must be an integer from {minimum} to 2**63-1; got {value!r:.80}.")


class ComplianceAuditor:
    """Audits datasets, model configurations and pipelines against GDPR, CCPA or HIPAA.

    When ``log_dir`` or ``bootstrap_servers`` is given (as an argument or through the
    SECUREML_AUDIT_* environment variables), every audit is recorded as an audit trail
    (``secureml.audit.AuditTrail``): the data access, one compliance-check event per check,
    and the outcome. ``k_threshold`` is the smallest acceptable k-anonymity; ``sample_rows``
    bounds how many rows the content patterns scan (counts always cover the whole table).
    ``user`` is the identity the audit's events carry (default: the OS user running it); its
    read of the dataset is logged with the purpose ``compliance_audit``, which the alerting
    rules recognise, so an audit raises no access alert about itself.
    """

    @naming_the_call("ComplianceAuditor")
    def __init__(
        self,
        regulation: str = "GDPR",
        log_dir: str | os.PathLike[str] | None = None,
        *,
        bootstrap_servers: str | None = None,
        topic: str | None = None,
        user: str | None = None,
        producer_config: Mapping[str, Any] | None = None,
        k_threshold: int = DEFAULT_K_THRESHOLD,
        sample_rows: int = DEFAULT_SAMPLE_ROWS,
    ) -> None:
        self.regulation = normalise_regulation(regulation)
        self.k_threshold = _require_int("k_threshold", k_threshold, 2)
        self.sample_rows = _require_int("sample_rows", sample_rows, 1)
        self._trail = TrailSettings(log_dir, bootstrap_servers, topic, auditor_identity(user), producer_config)
        try:  # where the trails would go is checked now, not at the first audit
            resolve_config(log_dir=log_dir, bootstrap_servers=bootstrap_servers, topic=topic,
                           producer_config=producer_config)
        except AuditConfigError as error:
            raise InvalidArgumentError(str(error)) from None

    @naming_the_call("ComplianceAuditor.audit_dataset")
    def audit_dataset(
        self, dataset: Dataset, dataset_name: str, metadata: Mapping[str, Any] | None = None
    ) -> ComplianceReport:
        """Audit a pandas or Polars DataFrame, a pyarrow Table or a DuckDB relation."""
        name = _require_name("dataset_name", dataset_name)
        declared = parse(DatasetMetadata, metadata, "metadata")
        source = open_dataset(dataset)
        context: dict[str, JSON] = {
            "audited": "dataset", "name": name,
            "k_threshold": self.k_threshold, "sample_rows": self.sample_rows,
        }
        with self._recording(name, context) as trail:
            columns = source.columns()
            num_rows = source.count()
            if trail is not None:
                trail.data_access(name, [column.name for column in columns], num_rows)
            profile = profile_dataset(
                source, columns, num_rows,
                sample_rows=self.sample_rows,
                k_threshold=self.k_threshold,
                quasi_identifiers=declared.quasi_identifiers,
            )
            report = run_checks(
                DATASET_CHECKS, DatasetContext(self.regulation, profile, declared),
                regulation=self.regulation, audited="dataset", name=name,
            )
            return self._recorded(report, trail)

    @naming_the_call("ComplianceAuditor.audit_model")
    def audit_model(self, model_config: Mapping[str, Any], model_name: str) -> ComplianceReport:
        """Audit a model's declared configuration: privacy parameters, explainability, erasure..."""
        name = _require_name("model_name", model_name)
        declared = parse(ModelDeclaration, model_config, "model_config")
        with self._recording(name, {"audited": "model", "name": name}) as trail:
            report = run_checks(
                MODEL_CHECKS, ModelContext(self.regulation, declared),
                regulation=self.regulation, audited="model", name=name,
            )
            return self._recorded(report, trail)

    @naming_the_call("ComplianceAuditor.audit_pipeline")
    def audit_pipeline(
        self, pipeline_steps: Sequence[Mapping[str, Any]], pipeline_name: str
    ) -> ComplianceReport:
        """Audit a pipeline's steps, given in the order they run."""
        name = _require_name("pipeline_name", pipeline_name)
        if not isinstance(pipeline_steps, (list, tuple)) or not 0 < len(pipeline_steps) <= MAX_LIST_ITEMS:
            raise InvalidArgumentError(
                f"pipeline_steps must be a list of 1 to {MAX_LIST_ITEMS} step dicts; got "
                f"{pipeline_steps!r:.80}. Pass e.g. [{{'name': 'load', 'type': 'source'}}, "
                "{'name': 'fit', 'type': 'training'}]."
            )
        steps = tuple(
            parse(PipelineStep, step, f"pipeline_steps[{index}]")
            for index, step in enumerate(pipeline_steps)
        )
        context: dict[str, JSON] = {"audited": "pipeline", "name": name, "steps": len(steps)}
        with self._recording(name, context) as trail:
            report = run_checks(
                PIPELINE_CHECKS, PipelineContext(self.regulation, steps),
                regulation=self.regulation, audited="pipeline", name=name,
            )
            return self._recorded(report, trail)

    def _recording(
        self, name: str, context: Mapping[str, JSON]
    ) -> AbstractContextManager[Recording | None]:
        """Open the audit trail of one audit, or nothing when recording is off."""
        return recording(
            self._trail,
            operation_name=f"compliance_audit_{name}",
            regulation=self.regulation,
            context={"auditor": "secureml.compliance", "regulation": self.regulation, **context},
        )

    @staticmethod
    def _recorded(report: ComplianceReport, trail: Recording | None) -> ComplianceReport:
        """Record the report's checks on the trail, if any, and stamp it with the operation id."""
        if trail is None:
            return report
        trail.checks(report)
        return dataclasses.replace(report, operation_id=trail.operation_id)
