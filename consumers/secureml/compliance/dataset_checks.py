"""The checks run on a dataset, each citing the provision it tests per regulation.

Checks judge a :class:`~secureml.compliance.profile.DatasetProfile` and the declared
metadata; they never read the data themselves. Checks of declared metadata apply only
when the dataset holds personal data: without it the regulations do not apply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .checks import Advice, Check, Finding, Outcome, only_when, undeclared
from .declarations import LEGAL_BASES, DatasetMetadata, normalised_basis
from .profile import DatasetProfile, Detection
from .report import JSON, Severity

#: Safe Harbor letters the identifier check covers; (A)-(C) have checks of their own.
SAFE_HARBOR_IDENTIFIERS = frozenset("DEFGHIJKLMNOPQR")
RESEARCH_PURPOSE = re.compile(r"research|scien|statistic|archiv", re.IGNORECASE)
PSEUDONYMISE = (
    "Drop the column, or replace it with a keyed pseudonym (e.g. HMAC-SHA-256 with a key "
    "kept apart from the data) before any further use."
)
DE_IDENTIFY = (
    "Remove the column, or replace it with a re-identification code not derived from it "
    "(45 CFR §164.514(c)); Safe Harbor requires all 18 identifiers to be removed."
)


@dataclass(frozen=True)
class DatasetContext:
    """What the dataset checks judge: the profile, the declared metadata, the regulation."""

    regulation: str
    profile: DatasetProfile
    metadata: DatasetMetadata


def _column_finding(
    detection: Detection, severity: Severity, recommendation: str, article: str | None = None
) -> Finding:
    """Report one detection as a finding against its column."""
    return Finding(
        severity=severity,
        component=f"column '{detection.column}'",
        description=f"{detection.describe()}.",
        recommendation=recommendation,
        columns=(detection.column,),
        evidence=detection.evidence(),
        article=article,
    )


def _found(detections: list[Detection]) -> dict[str, JSON]:
    """Return the check details listing what was found, as counts."""
    return {"findings": [detection.evidence() for detection in detections]}


def _identifier_outcome(context: DatasetContext, detections: list[Detection]) -> Outcome:
    """Report identifier detections, citing the Safe Harbor letter under HIPAA."""
    hipaa = context.regulation == "HIPAA"
    findings = tuple(
        _column_finding(
            detection,
            detection.kind.severity,
            DE_IDENTIFY if hipaa else PSEUDONYMISE,
            detection.kind.safe_harbor_citation if hipaa else None,
        )
        for detection in detections
    )
    return Outcome(findings=findings, details=_found(detections))


def direct_identifiers(context: DatasetContext) -> Outcome:
    """Find columns holding direct identifiers: e-mail, phone, national id, card, IBAN, IP..."""
    profile = context.profile
    if context.regulation == "HIPAA":
        detections = [d for d in profile.detections if d.kind.safe_harbor in SAFE_HARBOR_IDENTIFIERS]
    else:
        detections = profile.in_groups("direct_identifier")
    return _identifier_outcome(context, detections)


def person_names(context: DatasetContext) -> Outcome:
    """Find columns holding names of people, by column name or by common first names."""
    return _identifier_outcome(context, context.profile.in_groups("person_name"))


def special_categories(context: DatasetContext) -> Outcome:
    """Find special categories (GDPR Art. 9/10) or sensitive personal information (CCPA)."""
    regulation = context.regulation
    detections = [
        d for d in context.profile.in_groups("special_category") if regulation in d.kind.special_under
    ]
    condition = context.metadata.special_category_condition
    findings: list[Finding] = []
    advice: list[Advice] = []
    for detection in detections:
        override = detection.kind.articles.get(regulation)
        if regulation == "CCPA":
            findings.append(_column_finding(
                detection, "low",
                "Use it only for the purposes §1798.121(a) allows, or offer and honour a "
                "'Limit the Use of My Sensitive Personal Information' link.",
            ))
        elif condition is not None and override is None:
            advice.append(Advice(
                f"column '{detection.column}'",
                f"{detection.describe()}; processing relies on the Art. 9(2) condition "
                f"'{condition}'.",
                "Record why the condition applies and the safeguards it requires.",
                (detection.column,),
            ))
        else:
            findings.append(_column_finding(
                detection, "high",
                "Remove the column, or declare the Art. 9(2) condition relied on as "
                "metadata['special_category_condition'] (e.g. 'explicit_consent')."
                if override is None else
                "Process criminal-offence data only under official authority or where Union "
                "or Member State law authorises it; otherwise remove the column.",
                override,
            ))
    details = _found(detections) | {"special_category_condition": condition}
    return Outcome(findings=tuple(findings), advice=tuple(advice), details=details)


def k_anonymity(context: DatasetContext) -> Outcome:
    """Check that every combination of quasi-identifier values covers at least k records."""
    anonymity = context.profile.anonymity
    if anonymity is None:
        return Outcome(details={"quasi_identifiers": []})
    details: dict[str, JSON] = {
        "quasi_identifiers": list(anonymity.quasi_identifiers),
        "k": anonymity.k,
        "threshold": anonymity.threshold,
        "groups": anonymity.groups,
        "groups_below_threshold": anonymity.small_groups,
        "records_below_threshold": anonymity.records_in_small_groups,
    }
    if anonymity.k is None or anonymity.k >= anonymity.threshold:
        return Outcome(details=details)
    columns = anonymity.quasi_identifiers
    finding = Finding(
        severity="high" if anonymity.k == 1 else "medium",
        component="dataset",
        description=(
            f"The table is only {anonymity.k}-anonymous over the quasi-identifiers "
            f"{list(columns)}: {anonymity.small_groups:,} of {anonymity.groups:,} combinations "
            f"of their values cover fewer than {anonymity.threshold} records "
            f"({anonymity.records_in_small_groups:,} records in all)."
        ),
        recommendation=(
            "Generalise the quasi-identifiers (age bands, 3-digit ZIP codes, year of birth) or "
            f"suppress rare combinations until each covers at least {anonymity.threshold} records."
        ),
        columns=columns,
        evidence=details,
    )
    return Outcome(findings=(finding,), details=details)


def safe_harbor_geography(context: DatasetContext) -> Outcome:
    """Find geographic subdivisions smaller than a state (HIPAA Safe Harbor (B))."""
    profile = context.profile
    counts = profile.safe_harbor
    detections = [d for d in profile.detections if d.kind.safe_harbor == "B"]
    findings = []
    for detection in detections:
        column = detection.column
        if detection.kind.id != "postal_code":
            description = f"{detection.describe()}: a geographic subdivision smaller than a state."
        elif counts.five_digit_zips.get(column):
            description = (
                f"{counts.five_digit_zips[column]:,} of {profile.num_rows:,} records in column "
                f"'{column}' hold a ZIP code with more than 3 digits."
            )
        elif counts.restricted_zip3.get(column):
            description = (
                f"{counts.restricted_zip3[column]:,} records in column '{column}' hold a 3-digit "
                "ZIP prefix of an area with 20,000 people or fewer."
            )
        else:
            continue
        findings.append(Finding(
            severity="high",
            component=f"column '{column}'",
            description=description,
            recommendation=(
                "Keep at most the state; a ZIP code may keep its first 3 digits, or 000 where "
                "the 3-digit area has 20,000 people or fewer."
            ),
            columns=(column,),
            evidence=detection.evidence(),
        ))
    return Outcome(findings=tuple(findings), details=_found(detections) | {
        "five_digit_zips": dict(counts.five_digit_zips),
        "restricted_zip3": dict(counts.restricted_zip3),
    })


def safe_harbor_dates(context: DatasetContext) -> Outcome:
    """Find dates more specific than the year, and years of birth implying an age over 89."""
    profile = context.profile
    old_birth_years = profile.safe_harbor.birth_years_over_89
    detections = [d for d in profile.detections if d.kind.id in ("birth_date", "event_date", "calendar_date")]
    reduce_to_year = "Reduce the dates to the year, or shift them by a secret per-person offset."
    findings: list[Finding] = []
    advice: list[Advice] = []
    for detection in detections:
        if detection.kind.id != "calendar_date" or profile.personal_columns:
            findings.append(_column_finding(detection, "high", reduce_to_year))
        else:
            advice.append(Advice(
                f"column '{detection.column}'",
                f"{detection.describe()}; if the dates relate to a person they are identifiers.",
                reduce_to_year,
                (detection.column,),
            ))
    for column, count in old_birth_years.items():
        if count:
            findings.append(Finding(
                severity="high",
                component=f"column '{column}'",
                description=(
                    f"{count:,} records in column '{column}' have a year of birth implying an "
                    "age over 89."
                ),
                recommendation="Replace every such year with a single category (e.g. '1935 or earlier').",
                columns=(column,),
            ))
    return Outcome(findings=tuple(findings), advice=tuple(advice),
                   details=_found(detections) | {"birth_years_over_89": dict(old_birth_years)})


def safe_harbor_ages(context: DatasetContext) -> Outcome:
    """Find ages over 89, which Safe Harbor allows only as one '90 or older' category."""
    over_89 = context.profile.safe_harbor.ages_over_89
    findings = tuple(
        Finding(
            severity="high",
            component=f"column '{column}'",
            description=f"{count:,} records in column '{column}' have an age over 89.",
            recommendation="Replace every age over 89 with a single category such as '90+'.",
            columns=(column,),
        )
        for column, count in over_89.items()
        if count
    )
    return Outcome(findings=findings, details={"ages_over_89": dict(over_89)})


def _holds_personal_data(context: DatasetContext) -> bool:
    return bool(context.profile.personal_columns)


_when_personal = only_when(_holds_personal_data, "no personal data detected")


@_when_personal
def purpose_limitation(context: DatasetContext) -> Outcome:
    """Check that the purpose of processing is declared."""
    if context.metadata.purpose is None:
        return undeclared(
            "metadata['purpose']", "medium", "personal data must be processed for a specified purpose.",
            "Declare the purpose, e.g. metadata={'purpose': 'credit_risk_model_training'}.",
        )
    return Outcome(details={"declared": True, "purpose": context.metadata.purpose})


@_when_personal
def data_minimisation(context: DatasetContext) -> Outcome:
    """Check that the dataset holds no personal data beyond the columns its purpose needs."""
    profile, required = context.profile, context.metadata.required_columns
    if required is None:
        return undeclared(
            "metadata['required_columns']", "low", "without it, data minimisation cannot be demonstrated.",
            "Declare the columns the purpose needs, e.g. metadata['required_columns'] = ['age', 'income'].",
        )
    personal = set(profile.personal_columns)
    unneeded = [name for name in profile.column_names if name not in required]
    unneeded_personal = [name for name in unneeded if name in personal]
    absent = [name for name in required if name not in profile.column_names]
    findings, advice = [], []
    if unneeded_personal:
        findings.append(Finding(
            "medium", "dataset",
            f"{len(unneeded_personal)} columns hold personal data the declared purpose does not "
            f"need: {unneeded_personal}.",
            "Drop these columns before processing, or add them to metadata['required_columns'] "
            "with the reason they are needed.",
            tuple(unneeded_personal),
        ))
    if len(unneeded) > len(unneeded_personal):
        others = [name for name in unneeded if name not in personal]
        advice.append(Advice("dataset", f"Columns not needed for the purpose: {others}.",
                             "Drop them to keep the dataset minimal.", tuple(others)))
    if absent:
        advice.append(Advice("metadata['required_columns']",
                             f"Required columns missing from the dataset: {absent}.",
                             "Check the spelling in metadata['required_columns'].", tuple(absent)))
    return Outcome(findings=tuple(findings), advice=tuple(advice), details={
        "required_columns": list(required),
        "unneeded_personal_columns": unneeded_personal,
        "unneeded_columns": unneeded,
    })


@_when_personal
def legal_basis(context: DatasetContext) -> Outcome:
    """Check that a recognised legal basis (GDPR) or permitted use (HIPAA) is declared."""
    allowed = LEGAL_BASES[context.regulation]
    basis = normalised_basis(context.metadata.legal_basis)
    if basis is None:
        return undeclared(
            "metadata['legal_basis']", "high", "processing personal data needs a legal basis.",
            f"Declare one of {list(allowed)} as metadata['legal_basis'].",
        )
    if basis not in allowed:
        finding = Finding(
            "high", "metadata['legal_basis']",
            f"metadata['legal_basis'] = {context.metadata.legal_basis!r} is not a recognised basis.",
            f"Declare one of {list(allowed)}.",
        )
        return Outcome(findings=(finding,), details={"declared": True, "legal_basis": basis})
    return Outcome(details={"declared": True, "legal_basis": basis})


@_when_personal
def consent(context: DatasetContext) -> Outcome:
    """Check that consent was obtained when processing relies on it."""
    basis = normalised_basis(context.metadata.legal_basis)
    obtained = context.metadata.consent_obtained
    details: dict[str, JSON] = {"legal_basis": basis, "consent_obtained": obtained}
    if basis not in (None, "consent") or obtained is True:
        return Outcome(details=details)
    if obtained is False:
        finding = Finding(
            "high", "metadata['consent_obtained']",
            "Consent was not obtained, yet processing relies on it.",
            "Obtain consent first, or rely on another legal basis and declare it as metadata['legal_basis'].",
        )
        return Outcome(findings=(finding,), details=details)
    return undeclared(
        "metadata['consent_obtained']", "medium", "the controller must be able to show consent was given.",
        "Declare metadata['consent_obtained'] = True once consent is recorded (when, how, for what).",
    )


@_when_personal
def retention(context: DatasetContext) -> Outcome:
    """Check that a retention period is declared."""
    period = context.metadata.retention_period
    if period is None:
        return undeclared(
            "metadata['retention_period']", "medium", "personal data may be kept no longer than necessary.",
            "Declare how long the data is kept, e.g. metadata['retention_period'] = '2 years'.",
        )
    return Outcome(details={"declared": True, "retention_period": period})


@_when_personal
def storage_location(context: DatasetContext) -> Outcome:
    """Check that the storage location is declared, so that transfers can be assessed."""
    location = context.metadata.data_storage_location
    if location is None:
        return undeclared(
            "metadata['data_storage_location']", "low", "transfers outside the EEA need safeguards.",
            "Declare where the data is stored, e.g. metadata['data_storage_location'] = 'eu-west-1'.",
        )
    return Outcome(details={"declared": True, "data_storage_location": location})


@_when_personal
def security(context: DatasetContext) -> Outcome:
    """Check that encryption and access controls are declared."""
    metadata = context.metadata
    missing = [key for key in ("encryption", "access_controls") if not getattr(metadata, key)]
    if not missing:
        return Outcome(details={"missing": []})
    finding = Finding(
        "medium", "metadata",
        f"No {' or '.join(missing)} declared for a dataset holding personal data.",
        "Declare the measures, e.g. metadata['encryption'] = 'AES-256 at rest' and "
        "metadata['access_controls'] = 'role-based, least privilege'.",
    )
    return Outcome(findings=(finding,), details={"missing": missing})


def research_safeguards(context: DatasetContext) -> Outcome:
    """Check that data used for research or statistics holds no direct identifiers."""
    purpose = context.metadata.purpose
    if purpose is None or not RESEARCH_PURPOSE.search(purpose):
        return Outcome(details={"applicable": False, "reason": "purpose is not research or statistics"})
    identifying = context.profile.in_groups("direct_identifier", "person_name")
    columns = tuple(dict.fromkeys(detection.column for detection in identifying))
    if not columns:
        return Outcome(details={"applicable": True, "identifying_columns": []})
    finding = Finding(
        "high", "dataset",
        f"The purpose {purpose!r} is research or statistics, yet columns {list(columns)} "
        "identify people directly.",
        "Pseudonymise or remove these columns; research needs data minimisation safeguards.",
        columns,
    )
    return Outcome(findings=(finding,), details={"applicable": True, "identifying_columns": list(columns)})


DATASET_CHECKS: tuple[Check[DatasetContext], ...] = (
    Check("direct_identifiers", {"GDPR": "Art. 4(1), Art. 25(1)", "CCPA": "§1798.140(v)(1)",
                                 "HIPAA": "45 CFR §164.514(b)(2)(i)"}, direct_identifiers),
    Check("person_names", {"GDPR": "Art. 4(1)", "CCPA": "§1798.140(v)(1)(A)",
                           "HIPAA": "45 CFR §164.514(b)(2)(i)(A)"}, person_names),
    Check("special_categories", {"GDPR": "Art. 9(1)", "CCPA": "§1798.140(ae), §1798.121"},
          special_categories),
    Check("k_anonymity", {"GDPR": "Art. 4(1), Art. 25(1)", "CCPA": "§1798.140(m)",
                          "HIPAA": "45 CFR §164.514(b)(1)"}, k_anonymity),
    Check("safe_harbor_geography", {"HIPAA": "45 CFR §164.514(b)(2)(i)(B)"}, safe_harbor_geography),
    Check("safe_harbor_dates", {"HIPAA": "45 CFR §164.514(b)(2)(i)(C)"}, safe_harbor_dates),
    Check("safe_harbor_ages", {"HIPAA": "45 CFR §164.514(b)(2)(i)(C)"}, safe_harbor_ages),
    Check("purpose_limitation", {"GDPR": "Art. 5(1)(b)", "CCPA": "§1798.100(a)(1)"}, purpose_limitation),
    Check("data_minimisation", {"GDPR": "Art. 5(1)(c)", "CCPA": "§1798.100(c)",
                                "HIPAA": "45 CFR §164.502(b), §164.514(d)"}, data_minimisation),
    Check("legal_basis", {"GDPR": "Art. 6(1)", "HIPAA": "45 CFR §164.502(a), §164.508"}, legal_basis),
    Check("consent", {"GDPR": "Art. 7(1)"}, consent),
    Check("retention", {"GDPR": "Art. 5(1)(e)", "CCPA": "§1798.100(a)(3)"}, retention),
    Check("storage_location", {"GDPR": "Art. 44"}, storage_location),
    Check("security", {"GDPR": "Art. 32(1)", "CCPA": "§1798.100(e)",
                       "HIPAA": "45 CFR §164.312(a)(1), §164.312(a)(2)(iv)"}, security),
    Check("research_safeguards", {"GDPR": "Art. 89(1)"}, research_safeguards),
)
