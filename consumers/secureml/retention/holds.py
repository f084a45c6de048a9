"""Legal holds: operations and data subjects whose events no retention policy may expire.

Stored durably, owner-only, in the lake: ``lake/_retention/holds.json``, replaced atomically
under a file lock. A hold names an ``operation_id``, an ``operation_name`` or a ``subject``;
a subject hold keeps every event whose ``user`` or ``user_id`` (the data subject of user
requests) is that subject. Subjects are kept in their stored form (``stored_subject``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from secureml.audit._fs import file_lock, make_private_dir, write_atomically
from secureml.audit.config import resolve_config
from secureml.audit.exceptions import AuditValidationError
from secureml.audit.timeutil import micros_to_iso, now_micros
from secureml.lake.table import Lake
from secureml.retention.exceptions import RetentionError
from secureml.retention.policy import quote

RETENTION_DIR = "_retention"
HOLDS_FILE = "holds.json"
LOCK_FILE = ".lock"
HoldKind = Literal["operation_id", "operation_name", "subject"]
HOLD_KINDS: tuple[HoldKind, ...] = ("operation_id", "operation_name", "subject")


def stored_subject(value: str, log_dir: str | os.PathLike[str] | None = None) -> str:
    """The form a data subject's id is stored in the lake: its pseudonym where a key store exists.

    A hold therefore never keeps a subject's id in clear (holds.json and retention records copy it).
    """
    from secureml.query.privacy import stored_forms

    forms = stored_forms(value, "subject", Path(log_dir) if log_dir is not None else None, "stored_subject")
    return forms[-1] if forms else value


@dataclass(frozen=True)
class Hold:
    """One legal hold: what it holds, why, and since when."""

    kind: HoldKind
    value: str  # a subject in its stored form
    reason: str = ""
    created_at: str = ""


def _root(log_dir: str | os.PathLike[str] | None) -> Path:
    """The lake's retention folder for a log directory (None: the configured default)."""
    return Lake(resolve_config(log_dir=log_dir, bootstrap_servers="").log_dir).root / RETENTION_DIR


def retention_dir(log_dir: str | os.PathLike[str] | None) -> Path:
    """The lake's retention folder (holds, records); created owner-only."""
    return make_private_dir(_root(log_dir))


def _validated(kind: str, value: object, where: str,
               log_dir: str | os.PathLike[str] | None) -> tuple[HoldKind, str]:
    if kind not in HOLD_KINDS:
        raise AuditValidationError("kind", f"must be one of {', '.join(HOLD_KINDS)}, got {kind!r}", where=where)
    if not isinstance(value, str) or not value.strip():
        raise AuditValidationError(kind, "must be a non-empty string", where=where)
    return kind, stored_subject(value, log_dir) if kind == "subject" else value  # type: ignore[return-value]


def read_holds(path: Path) -> list[Hold]:
    """The holds stored in a holds file (none when it does not exist)."""
    try:
        raw = json.loads(path.read_text("utf-8"))
        return [Hold(h["kind"], h["value"], h.get("reason", ""), h.get("created_at", "")) for h in raw["holds"]]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RetentionError(f"the legal holds file {path} is unreadable ({exc}): restore it from a backup; "
                             "retention is not applied while holds are unknown") from None


def _write(path: Path, holds: list[Hold]) -> None:
    data = json.dumps({"holds": [asdict(h) for h in holds]}, indent=2, sort_keys=True).encode() + b"\n"
    write_atomically(path, data, 0o600, replace=True)


def list_holds(log_dir: str | os.PathLike[str] | None = None) -> list[Hold]:
    """Every legal hold of the lake under ``log_dir``."""
    return read_holds(_root(log_dir) / HOLDS_FILE)


def add_hold(log_dir: str | os.PathLike[str] | None, kind: str, value: str, reason: str = "") -> Hold:
    """Place a legal hold (a hold already in place is kept as it was and returned)."""
    kind, value = _validated(kind, value, "add_hold", log_dir)
    directory = retention_dir(log_dir)
    with file_lock(directory / LOCK_FILE):
        holds = read_holds(directory / HOLDS_FILE)
        for hold in holds:
            if (hold.kind, hold.value) == (kind, value):
                return hold
        hold = Hold(kind, value, reason, micros_to_iso(now_micros()))
        _write(directory / HOLDS_FILE, [*holds, hold])
    return hold


def remove_hold(log_dir: str | os.PathLike[str] | None, kind: str, value: str) -> bool:
    """Lift a legal hold; False when there was none."""
    kind, value = _validated(kind, value, "remove_hold", log_dir)
    directory = retention_dir(log_dir)
    with file_lock(directory / LOCK_FILE):
        holds = read_holds(directory / HOLDS_FILE)
        kept = [h for h in holds if (h.kind, h.value) != (kind, value)]
        if len(kept) == len(holds):
            return False
        _write(directory / HOLDS_FILE, kept)
    return True


def held_sql(holds: list[Hold]) -> str:
    """SQL condition true for events a hold keeps (``false`` without holds); same in DataFusion and DuckDB."""
    terms = []
    for kind, columns in (("operation_id", ("operation_id",)), ("operation_name", ("operation_name",)),
                          ("subject", ("user", "user_id"))):
        values = sorted({h.value for h in holds if h.kind == kind})
        if values:
            listed = ", ".join(quote(v) for v in values)
            terms += [f"coalesce(\"{column}\", '') IN ({listed})" for column in columns]
    return "(" + " OR ".join(terms) + ")" if terms else "false"
