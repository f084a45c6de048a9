"""Retention policies: how long each kind of event is kept, and the SQL predicate of what has expired.

A policy (a YAML/JSON file or a dict)::

    event_types: {model_inference: 6mo, compliance_check: 7y}
    regulations: {GDPR: 3y}
    default: keep                      # events no rule names: kept (or a duration)
    allow_below_legal_minimum: false

An event is kept for the longest period among the rules that name it (its event type's, each
of its regulations'); an event no rule names gets ``default``. ``keep`` keeps forever.
Durations are "at least": ``h``, ``d``, ``w``, ``mo`` (31 days) and ``y`` (366 days). Events
whose regulations name the EU AI Act are kept at least six months (Art. 19 and 26(6)) whatever
the rules say; a rule that would keep them less is refused unless
``allow_below_legal_minimum: true`` (then the floor is off, and the record says so).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from secureml.audit.exceptions import AuditValidationError

KEEP = "keep"
_DURATION = re.compile(r"^\s*(\d+)\s*(h|d|w|mo|y)\s*$", re.IGNORECASE)
_UNIT_HOURS = {"h": 1, "d": 24, "w": 7 * 24, "mo": 31 * 24, "y": 366 * 24}
LEGAL_MINIMUM = "6mo"  # EU AI Act Art. 19 and 26(6): logs of high-risk systems kept at least six months
EU_AI_ACT = ("EU AI Act", "EU_AI_ACT", "EU AI ACT", "AI Act", "AI_ACT", "EUAIA")  # spellings the floor applies to
DEFAULT_POLICY: dict[str, Any] = {"event_types": {"model_inference": LEGAL_MINIMUM, "compliance_check": "7y"},
                                  "default": KEEP}
POLICY_KEYS = ("event_types", "regulations", "default", "allow_below_legal_minimum")

Dialect = Literal["datafusion", "duckdb"]


def parse_duration(value: object, field_name: str, where: str) -> dt.timedelta | None:
    """A duration ("180d", "7y", "6mo") or ``keep`` (None); AuditValidationError naming the field otherwise."""
    if isinstance(value, str) and value.strip().lower() in (KEEP, "forever"):
        return None
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None or int(match.group(1)) == 0:
        raise AuditValidationError(field_name, f"must be a positive duration such as 180d, 6mo, 7y (units h, d, w, "
                                   f"mo = 31 days, y = 366 days) or 'keep', got {value!r}", where=where)
    return dt.timedelta(hours=int(match.group(1)) * _UNIT_HOURS[match.group(2).lower()])


def _text(duration: dt.timedelta | None) -> str:
    return KEEP if duration is None else f"{duration // dt.timedelta(hours=1)}h"


@dataclass(frozen=True)
class RetentionPolicy:
    """How long events are kept: per event type, per regulation, and by default (None: forever)."""

    event_types: dict[str, dt.timedelta | None] = field(default_factory=dict)
    regulations: dict[str, dt.timedelta | None] = field(default_factory=dict)
    default: dt.timedelta | None = None
    allow_below_legal_minimum: bool = False

    @classmethod
    def from_dict(cls, raw: object, where: str = "retention policy") -> RetentionPolicy:
        """Validate a policy dict; AuditValidationError naming the field and the rule."""
        if not isinstance(raw, Mapping):
            raise AuditValidationError("policy", f"must be a mapping with {', '.join(POLICY_KEYS)}, "
                                       f"got {type(raw).__name__}", where=where)
        unknown = sorted(str(k) for k in raw if k not in POLICY_KEYS)
        if unknown:
            raise AuditValidationError(unknown[0], f"is not a policy field (known: {', '.join(POLICY_KEYS)})",
                                       where=where)
        rules: dict[str, dict[str, dt.timedelta | None]] = {}
        for section in ("event_types", "regulations"):
            entries = raw.get(section) or {}
            if not isinstance(entries, Mapping):
                raise AuditValidationError(section, "must map names to durations", where=where)
            rules[section] = {}
            for name, value in entries.items():
                if not isinstance(name, str) or not name.strip():
                    raise AuditValidationError(f"{section}.{name}", "names must be non-empty strings", where=where)
                rules[section][name] = parse_duration(value, f"{section}.{name}", where)
        allow = raw.get("allow_below_legal_minimum", False)
        if not isinstance(allow, bool):
            raise AuditValidationError("allow_below_legal_minimum", f"must be true or false, got {allow!r}",
                                       where=where)
        default = parse_duration(raw.get("default", KEEP), "default", where)
        floor = parse_duration(LEGAL_MINIMUM, "floor", where)
        assert floor is not None
        for name, kept in rules["regulations"].items():
            if name in EU_AI_ACT and kept is not None and kept < floor and not allow:
                raise AuditValidationError(
                    f"regulations.{name}", f"keeps EU AI Act logs {raw['regulations'][name]}, less than the six months "
                    "Art. 19 and 26(6) require (at least 6mo); set allow_below_legal_minimum: true only if "
                    "these systems are not high-risk", where=where)
        return cls(rules["event_types"], rules["regulations"], default, allow)

    def to_dict(self) -> dict[str, Any]:
        """Normalised JSON form (durations in hours), as a retention record keeps it."""
        return {"event_types": {k: _text(v) for k, v in sorted(self.event_types.items())},
                "regulations": {k: _text(v) for k, v in sorted(self.regulations.items())},
                "default": _text(self.default), "allow_below_legal_minimum": self.allow_below_legal_minimum}

    def expired_sql(self, now: dt.datetime, dialect: Dialect) -> str:
        """SQL condition true for events expired at ``now`` (false when nothing can expire)."""
        rules = [(f"event_type = {quote(t)}", d) for t, d in sorted(self.event_types.items())]
        rules += [(f"array_has(regulations, {quote(r)})", d) for r, d in sorted(self.regulations.items())]
        terms = [f"NOT ({match})" if kept is None else f"(NOT ({match}) OR {_before(now - kept, dialect)})"
                 for match, kept in rules]
        named = [match for match, _kept in rules]
        if self.default is None:
            terms.append("(" + (" OR ".join(named) if named else "false") + ")")
        else:
            terms.append("(" + " OR ".join([*named, _before(now - self.default, dialect)]) + ")")
        if not self.allow_below_legal_minimum:
            floor = parse_duration(LEGAL_MINIMUM, "floor", "")
            assert floor is not None
            regulated = " OR ".join(f"array_has(regulations, {quote(r)})" for r in EU_AI_ACT)
            terms.append(f"(NOT ({regulated}) OR {_before(now - floor, dialect)})")
        return " AND ".join(terms)


def quote(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _before(moment: dt.datetime, dialect: Dialect) -> str:
    iso = moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if dialect == "duckdb":
        return f"\"timestamp\" < TIMESTAMPTZ {quote(iso)}"
    return f"\"timestamp\" < arrow_cast({quote(iso)}, 'Timestamp(Microsecond, Some(\"UTC\"))')"


def load_policy(policy: str | os.PathLike[str] | Mapping[str, Any] | RetentionPolicy | None) -> RetentionPolicy:
    """A policy from a YAML/JSON file, a dict, or the default (``DEFAULT_POLICY``) when None."""
    if isinstance(policy, RetentionPolicy):
        return policy
    if policy is None:
        return RetentionPolicy.from_dict(DEFAULT_POLICY, "default retention policy")
    if not isinstance(policy, (str, os.PathLike)):
        return RetentionPolicy.from_dict(policy)
    path = Path(policy)
    where = f"retention policy {path}"
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AuditValidationError("policy", f"cannot be read ({getattr(exc, 'strerror', None) or exc}): give a "
                                   "readable YAML or JSON file", where=where) from None
    try:
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AuditValidationError("policy", f"is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                                   f"{first}", where=where) from None
    return RetentionPolicy.from_dict(raw, where)
