"""Integrity status of the lake, from the verifier (secureml.integrity.verify)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from secureml.audit.events import json_value
from secureml.audit.privacy.reveal import RevealedEvent
from secureml.audit.schema import JSON_FIELDS, TIMESTAMP_FIELDS
from secureml.integrity import verify
from secureml.integrity.chains import check_chains
from secureml.integrity.keys import default_key_path, public_key_path
from secureml.integrity.result import REORDERED
from secureml.integrity.scan import _skeleton
from secureml.lake.rows import lake_schema
from secureml.query.filters import parse_time
from secureml.reporting import formatting as fmt
from secureml.reporting.document import Facts, Section, Text


def integrity_section(from_lake: bool, log_dir: str | None,
                      events: Sequence[Mapping[str, Any]] | None = None) -> tuple[Section, str]:
    """The verifier's verdict on the lake (or on the events passed in) and a one-word status for the cover."""
    if events is not None:
        return _events_section(events)
    if not from_lake:
        return _unverified(
            "The report was built from a DuckDB connection's events, not read from the lake; run the verifier "
            "(secureml.audit.verify) on the lake to prove nothing was altered or removed."
        )
    try:
        result = verify(log_dir, public_key=_configured_public_key())
    except Exception as error:  # the report must still be written; the failure is shown instead of hidden
        return _unverified(f"The verifier could not run: {type(error).__name__}: {error}")
    where = log_dir if log_dir is not None else "the default log_dir"
    facts = Facts(tuple((str(k).replace("_", " ").capitalize(), _fact(k, v, result))
                        for k, v in result.summary().items()))
    if result.ok and result.signed:
        verdict = Text(f"Verified: the hash chains of the whole lake at {where} are intact and complete, and signed "
                       "checkpoints cover them.", "good")
        return Section("Integrity", (verdict, facts)), "verified"
    if result.ok:
        verdict = Text(f"Not signed: the hash chains of the lake at {where} are intact, but no signed checkpoint "
                       "covers them, so a consistent rewrite or a deleted operation would not show. Give the "
                       "materializer a signing key (secureml-audit keygen).", "bad")
        return Section("Integrity", (verdict, facts)), "intact, not signed"
    verdict = Text(f"FAILED: the verifier found altered, missing or out-of-order events in {where}.", "bad")
    return Section("Integrity", (verdict, facts)), "FAILED"


def _fact(key: str, value: object, result: Any) -> str:
    """One line of the verifier's summary in the report's number and time formats."""
    if isinstance(value, int) and not isinstance(value, bool):
        return fmt.count(value)
    if key == "latest_checkpoint" and result.checkpoints:
        latest = result.checkpoints[-1]
        try:
            return f"#{fmt.count(latest.sequence)} at {fmt.utc(parse_time(latest.created_at, 'created_at'))} UTC"
        except (TypeError, ValueError):
            return fmt.truncate(value)
    return fmt.truncate(value)


def _configured_public_key() -> Path | None:
    """The public key of this machine's signing key, when there is one: trusted, unlike the lake's own copy."""
    path = public_key_path(default_key_path())
    return path if path.is_file() else None


def _unverified(reason: str) -> tuple[Section, str]:
    """The section shown when no verification ran, with the reason."""
    return Section("Integrity", (Text(f"Not verified. {reason}", "muted"),)), "not verified"


def _events_section(events: Sequence[Mapping[str, Any]]) -> tuple[Section, str]:
    """Each event passed in checked against its own hash, and the chains they form checked link by link.

    That proves the events are as they were recorded; only the lake's verifier can tell whether
    events were removed from it, so the verdict says so.
    """
    if not events:
        return _unverified("No events were passed to the report.")
    try:
        rows = _skeleton(_lake_rows(events), 0)
    except (KeyError, TypeError, ValueError, pa.ArrowException) as error:
        return _unverified(f"The events passed in are not as get_audit_logs returns them ({error}); pass that "
                           "list unchanged to have it verified.")
    altered = len(rows) - int(pc.sum(rows.column("intact")).as_py() or 0)
    reports = check_chains(pa.Table.from_batches([rows]), ["the events passed to the report"])
    whole = [r for r in reports.values() if not r.findings]
    relinked = [r for r in reports.values() if any(f.kind == REORDERED for f in r.findings)]
    partial = [r for r in reports.values() if r.findings and r not in relinked]
    facts = Facts((
        ("Events checked", fmt.count(len(rows))),
        ("Events whose hash matches their content", fmt.count(len(rows) - altered)),
        ("Events altered since they were recorded", fmt.count(altered)),
        ("Operations", fmt.count(len(reports))),
        ("Operations complete and linked in the list", fmt.count(len(whole))),
        ("Operations only partly in the list", fmt.count(len(partial))),
    ))
    if altered or relinked:
        problems = []
        if altered:
            problems.append(f"{fmt.count(altered)} of the {fmt.count(len(rows))} events passed to the report "
                            f"{'does' if altered == 1 else 'do'} not match the hash recorded with "
                            f"{'it' if altered == 1 else 'them'}: altered after they were recorded")
        if relinked:
            problems.append(f"{fmt.count(len(relinked))} operation(s) hold events that do not link to the event "
                            "before them")
        verdict = Text(f"FAILED: {'; '.join(problems)}.", "bad")
        return Section("Integrity", (verdict, facts)), "FAILED"
    scope = ("every operation is complete and its hash chain links" if not partial else
             f"{fmt.count(len(partial))} operation(s) are only partly in the list (a selection leaves gaps)")
    verdict = Text(
        f"Verified: each of the {fmt.count(len(rows))} events passed to the report matches its recorded hash; "
        f"{scope}. This proves these events were not altered; whether events were removed from the lake only "
        "the lake's verifier can tell (secureml-audit verify).", "good")
    return Section("Integrity", (verdict, facts)), "verified"


_JSON_VALUES = frozenset({"output", "arguments", "return_value"})  # any JSON value, never left out


def _lake_rows(events: Sequence[Mapping[str, Any]]) -> pa.RecordBatch:
    """Event dicts (get_audit_logs' shape) as lake rows, with the values exactly as they were encoded."""
    # get_audit_logs shows personal values as logged; the hash covers them as sealed.
    events = [e.as_sealed() if isinstance(e, RevealedEvent) else e for e in events]
    columns = []
    for field in lake_schema():
        if field.name == "source":
            values: list[Any] = ["report"] * len(events)
        elif field.name == "source_offset":
            values = list(range(len(events)))
        elif field.name in TIMESTAMP_FIELDS:
            values = [None if e.get(field.name) is None else parse_time(e[field.name], field.name) for e in events]
        elif field.name in JSON_FIELDS:
            # A dict field left out is NULL; a JSON value (an inference's output) of None was stored as "null".
            null = "null" if field.name in _JSON_VALUES else None
            values = [(null if e[field.name] is None else json_value(e[field.name], field.name, "ReportGenerator"))
                      if field.name in e else None for e in events]
        else:
            values = [e.get(field.name) for e in events]
        columns.append(pa.array(values, field.type))
    return pa.RecordBatch.from_arrays(columns, schema=lake_schema())
