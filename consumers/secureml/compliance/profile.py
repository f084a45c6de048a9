"""Profile a dataset: which columns hold which kinds of personal data, and how identifying it is.

Column names and types are classified in Python. Content patterns run in DuckDB over a
bounded Bernoulli sample of the text columns (the whole table when it is smaller than
the sample). Counts that must be exact (k-anonymity, ages over 89, fine-grained ZIP
codes) run over the whole table, in one query.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace

import duckdb
import pyarrow as pa

from .detectors import DETECTORS, SQL_MACROS, Detector
from .exceptions import InvalidArgumentError
from .report import JSON
from .source import TABLE, Column, DatasetSource, quote_identifier, quote_literal
from .vocabulary import KINDS_BY_ID, PERSONAL_GROUPS, Group, Kind, classify_column

SAMPLE_SEED = 42
#: Columns per content-scan query; keeps each query's plan small on wide tables.
SCAN_BATCH = 16
#: Three-digit ZIP prefixes of areas with 20,000 people or fewer (HHS Safe Harbor guidance,
#: 2000 Census); Safe Harbor requires them to be replaced by 000.
RESTRICTED_ZIP3 = (
    "036", "059", "063", "102", "203", "556", "692", "790", "821", "823", "830", "831",
    "878", "879", "884", "890", "893",
)


@dataclass(frozen=True)
class Detection:
    """A column found to hold one kind of personal data, with the evidence for it.

    ``sources`` says how it was found: by column ``name``, by column ``type`` (dates) or
    by ``content``; ``matched`` of ``scanned`` non-null sampled values matched, and
    ``example`` is one of them, masked.
    """

    column: str
    kind: Kind
    sources: tuple[str, ...]
    matched: int = 0
    scanned: int = 0
    example: str | None = None

    def evidence(self) -> dict[str, JSON]:
        """Return the evidence as counts: safe to record in an audit trail."""
        evidence: dict[str, JSON] = {
            "column": self.column, "kind": self.kind.id, "found_by": list(self.sources)
        }
        if "content" in self.sources:
            evidence |= {"matched_values": self.matched, "scanned_values": self.scanned}
        return evidence

    def describe(self) -> str:
        """Return how the column was found, in words, with the masked example if any."""
        ways = []
        if "name" in self.sources:
            ways.append("by its name")
        if "type" in self.sources:
            ways.append("by its type")
        if "content" in self.sources:
            ways.append(f"{self.matched:,} of {self.scanned:,} sampled values match")
        example = f", e.g. {self.example}" if self.example else ""
        return f"Column '{self.column}' holds {self.kind.label} ({'; '.join(ways)}{example})"


@dataclass(frozen=True)
class Anonymity:
    """k-anonymity of the whole table over its quasi-identifiers; k is None when it is empty."""

    quasi_identifiers: tuple[str, ...]
    threshold: int
    k: int | None
    groups: int
    small_groups: int
    records_in_small_groups: int


@dataclass(frozen=True)
class SafeHarborCounts:
    """Per column, how many records of the whole table break a HIPAA Safe Harbor limit."""

    ages_over_89: Mapping[str, int] = field(default_factory=dict)
    five_digit_zips: Mapping[str, int] = field(default_factory=dict)
    restricted_zip3: Mapping[str, int] = field(default_factory=dict)
    birth_years_over_89: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetProfile:
    """Everything the dataset checks need to know about one dataset."""

    columns: tuple[Column, ...]
    num_rows: int
    detections: tuple[Detection, ...]
    anonymity: Anonymity | None
    safe_harbor: SafeHarborCounts

    def in_groups(self, *groups: Group) -> list[Detection]:
        """Return the detections whose kind belongs to one of ``groups``."""
        return [detection for detection in self.detections if detection.kind.group in groups]

    @property
    def column_names(self) -> list[str]:
        """Return the names of all columns in order."""
        return [column.name for column in self.columns]

    @property
    def personal_columns(self) -> list[str]:
        """Return the columns that hold personal data, in column order."""
        personal = {detection.column for detection in self.in_groups(*PERSONAL_GROUPS)}
        return [name for name in self.column_names if name in personal]


def profile_dataset(
    source: DatasetSource,
    columns: Sequence[Column],
    num_rows: int,
    *,
    sample_rows: int,
    k_threshold: int,
    quasi_identifiers: Sequence[str] | None = None,
) -> DatasetProfile:
    """Profile a dataset whose ``columns`` and ``num_rows`` have already been read."""
    found_in_content = _by_content(source, columns, num_rows, sample_rows)
    detections = _merge(_by_name_and_type(columns), found_in_content)
    if quasi_identifiers is None:
        quasi_identifiers = [d.column for d in detections if d.kind.group == "quasi_identifier"]
    else:
        _require_columns(quasi_identifiers, columns)
    anonymity, safe_harbor = _count_whole_table(
        source, list(quasi_identifiers), _safe_harbor_counts(detections), k_threshold
    )
    return DatasetProfile(tuple(columns), num_rows, tuple(detections), anonymity, safe_harbor)


def _require_columns(names: Sequence[str], columns: Sequence[Column]) -> None:
    """Raise when ``names`` mentions a column the dataset lacks."""
    missing = sorted(set(names) - {column.name for column in columns})
    if missing:
        raise InvalidArgumentError(
            f"metadata['quasi_identifiers'] names columns the dataset lacks: {missing}. "
            f"Use names among {[column.name for column in columns]}."
        )


def _by_name_and_type(columns: Sequence[Column]) -> list[Detection]:
    """Detect personal data from column names, and dates from column types."""
    detections = []
    for column in columns:
        kind = classify_column(column.name)
        if kind is not None:
            detections.append(Detection(column.name, kind, ("name",)))
        elif column.is_temporal:
            detections.append(Detection(column.name, KINDS_BY_ID["calendar_date"], ("type",)))
    return detections


def _merge(*found: Iterable[Detection]) -> list[Detection]:
    """Merge detections of the same kind in the same column, keeping the strongest evidence."""
    merged: dict[tuple[str, str], Detection] = {}
    for detection in (d for group in found for d in group):
        key = (detection.column, detection.kind.id)
        earlier = merged.get(key)
        if earlier is None:
            merged[key] = detection
            continue
        stronger = detection if detection.matched > earlier.matched else earlier
        sources = tuple(dict.fromkeys(earlier.sources + detection.sources))
        merged[key] = replace(stronger, sources=sources)
    return list(merged.values())


def _sample(
    source: DatasetSource, text_columns: Sequence[Column], num_rows: int, sample_rows: int
) -> pa.Table:
    """Fetch the text columns of at most ``sample_rows`` rows as strings named c0, c1, ..."""
    select = ", ".join(
        f"CAST({quote_identifier(column.name)} AS VARCHAR) AS c{index}"
        for index, column in enumerate(text_columns)
    )
    sampling = ""
    if num_rows > sample_rows:
        # Bernoulli sampling reads the table once and is 3x faster than a reservoir here.
        sampling = f" USING SAMPLE {100 * sample_rows / num_rows:.6f}% (bernoulli, {SAMPLE_SEED})"
    return source.arrow(f"SELECT {select} FROM {TABLE}{sampling} LIMIT {sample_rows}")


def _scan_query(indices: Sequence[int]) -> str:
    """Build one query running every detector over the sampled columns ``indices``.

    Per column it returns the non-null count, then per detector: values with a candidate,
    values with a valid candidate, and the smallest valid candidate (the example). Only
    the cheap regexp_matches runs on every value; validation runs on matching values, and
    an unvalidated example is extracted once, from the smallest matching value.
    """
    matched, validated, aggregates = ["*"], ["*"], []
    for i in indices:
        aggregates.append(f"count(c{i})")
        for j, detector in enumerate(DETECTORS):
            pattern = quote_literal(detector.pattern)
            matched.append(f"regexp_matches(c{i}, {pattern}) AS m{i}_{j}")
            candidates = f"count(*) FILTER (WHERE m{i}_{j})"
            if detector.valid:
                extracted = f"regexp_extract_all(c{i}, {pattern}, 1)"
                valid = f"list_filter({extracted}, lambda x: {detector.valid})"
                validated.append(f"CASE WHEN m{i}_{j} THEN {valid}[1] END AS v{i}_{j}")
                aggregates.append(f"{candidates}, count(v{i}_{j}), min(v{i}_{j})")
            else:
                example = f"regexp_extract(min(c{i}) FILTER (WHERE m{i}_{j}), {pattern}, 1)"
                aggregates.append(f"{candidates}, {candidates}, {example if detector.mask else 'NULL'}")
    return (
        f"SELECT {', '.join(aggregates)} FROM "
        f"(SELECT {', '.join(validated)} FROM (SELECT {', '.join(matched)} FROM sample))"
    )


def _content_detection(
    column: str, detector: Detector, scanned: int, candidates: int, matched: int, example: str | None
) -> Detection | None:
    """Return a detection when the sampled matches clear the detector's thresholds."""
    if matched == 0 or matched < detector.min_share * scanned:
        return None
    if matched < detector.min_valid_ratio * candidates:
        return None
    masked = detector.mask(example) if detector.mask and example else None
    return Detection(column, KINDS_BY_ID[detector.kind], ("content",), matched, scanned, masked)


def _by_content(
    source: DatasetSource, columns: Sequence[Column], num_rows: int, sample_rows: int
) -> list[Detection]:
    """Run the content detectors over a sample of the text columns."""
    text_columns = [column for column in columns if column.is_text]
    if not text_columns or num_rows == 0:
        return []
    sample = _sample(source, text_columns, num_rows, sample_rows)
    connection = duckdb.connect()
    for macro in SQL_MACROS:
        connection.execute(macro)
    connection.register("sample", sample)
    detections = []
    for start in range(0, len(text_columns), SCAN_BATCH):
        indices = range(start, min(start + SCAN_BATCH, len(text_columns)))
        values = iter(connection.sql(_scan_query(indices)).fetchall()[0])
        for i in indices:
            scanned = next(values)
            for detector in DETECTORS:
                candidates, matched, example = next(values), next(values), next(values)
                detection = _content_detection(
                    text_columns[i].name, detector, scanned, candidates, matched, example
                )
                if detection is not None:
                    detections.append(detection)
    return detections


@dataclass(frozen=True)
class _Counts:
    """The Safe Harbor counts to take on one column: per count, an SQL condition on value v."""

    column: str
    conditions: Mapping[str, str]


def _safe_harbor_counts(detections: Sequence[Detection]) -> list[_Counts]:
    """Return the Safe Harbor counts the detected ages, ZIP codes and birth years call for."""
    oldest_allowed_birth_year = datetime.date.today().year - 90
    restricted = ", ".join(quote_literal(prefix) for prefix in RESTRICTED_ZIP3)
    digits = "regexp_replace(CAST(v AS VARCHAR), '[^0-9]', '', 'g')"
    conditions: dict[str, dict[str, str]] = {
        "age": {"ages_over_89": "TRY_CAST(v AS DOUBLE) > 89"},
        "birth_year": {
            "birth_years_over_89": f"TRY_CAST(v AS INTEGER) <= {oldest_allowed_birth_year}"
        },
        "postal_code": {
            "five_digit_zips": f"length({digits}) > 3",
            "restricted_zip3": (
                f"length({digits}) BETWEEN 1 AND 3 AND lpad({digits}, 3, '0') IN ({restricted})"
            ),
        },
    }
    return [
        _Counts(detection.column, conditions[detection.kind.id])
        for detection in detections
        if detection.kind.id in conditions
    ]


def _count_whole_table(
    source: DatasetSource, quasi_identifiers: list[str], counts: list[_Counts], k_threshold: int
) -> tuple[Anonymity | None, SafeHarborCounts]:
    """Compute k-anonymity and the Safe Harbor counts over the whole table in one query.

    Each part groups the table first (by the quasi-identifiers, or by one column), so the
    conditions run on distinct values rather than on every record.
    """
    parts = []
    if quasi_identifiers:
        # Grouping by one 64-bit hash of the combination is about twice as fast as grouping by
        # the columns when nearly every combination is unique; two combinations would share a
        # hash with probability below groups^2 / 2^65 (3e-6 for 10M groups).
        by = f"hash({', '.join(map(quote_identifier, quasi_identifiers))})"
        parts.append(
            f"(SELECT min(g), count(*), count(*) FILTER (WHERE g < {k_threshold}), "
            f"coalesce(sum(g) FILTER (WHERE g < {k_threshold}), 0) "
            f"FROM (SELECT count(*) AS g FROM {TABLE} GROUP BY {by}))"
        )
    for count in counts:
        sums = ", ".join(
            f"coalesce(sum(n) FILTER (WHERE {condition}), 0)" for condition in count.conditions.values()
        )
        column = quote_identifier(count.column)
        parts.append(f"(SELECT {sums} FROM (SELECT {column} AS v, count(*) AS n FROM {TABLE} GROUP BY 1))")
    if not parts:
        return None, SafeHarborCounts()
    row = iter(source.rows(f"SELECT * FROM {', '.join(parts)}")[0])

    anonymity = None
    if quasi_identifiers:
        k, groups, small_groups, records = (next(row) for _ in range(4))
        anonymity = Anonymity(
            tuple(quasi_identifiers), k_threshold, None if k is None else int(k),
            int(groups), int(small_groups), int(records),
        )
    by_field: dict[str, dict[str, int]] = {field.name: {} for field in fields(SafeHarborCounts)}
    for count in counts:
        for field_name in count.conditions:
            by_field[field_name][count.column] = int(next(row))
    return anonymity, SafeHarborCounts(**by_field)
