"""The privacy step of every reader: filter values turned into pseudonyms, stored values revealed.

get_audit_logs, connect, the query CLI and whatever reads through them (exports, the web UI)
show values as logged while their subject's key exists, ``<erased>`` after the erasure, and
stored values as they are when no key store is configured.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from secureml.audit.exceptions import AuditValidationError
from secureml.audit.privacy import reader_keystore
from secureml.audit.privacy.keys import pseudonym
from secureml.audit.privacy.protect import ENCRYPTED_PREFIX
from secureml.audit.privacy.reveal import Revealer, reveal_log
from secureml.audit.schema import JSON_FIELDS

IDENTIFIER_COLUMNS = ("user", "user_id")


def revealer_for(log_dir: Path | None) -> Revealer | None:
    """A revealer over the key store readers use, or None when there is none."""
    store = reader_keystore(log_dir)
    return None if store is None else Revealer(store)


def stored_forms(value: object, field: str, log_dir: Path | None, where: str) -> list[str] | None:
    """The forms an identifier filter may be stored in: as typed, and as its pseudonym."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise AuditValidationError(field, f"must be a string, got {type(value).__name__}", where=where)
    store = reader_keystore(log_dir)
    if store is None or value.startswith("ps_"):
        return [value]
    return [value, pseudonym(store.pseudonym_key(), value)]


def _column(values: list[Any], reveal: Callable[[Any], Any]) -> list[Any]:
    return [reveal(v) for v in values]


def reveal_table(table: pa.Table, revealer: Revealer | None) -> pa.Table:
    """An Arrow table of events with pseudonyms and ciphertexts revealed (columns holding neither are kept)."""
    if revealer is None or table.num_rows == 0:
        return table
    for index, field in enumerate(table.schema):
        if not pa.types.is_string(field.type) and not pa.types.is_large_string(field.type):
            continue
        column = table.column(index)
        if field.name in IDENTIFIER_COLUMNS:
            if not pc.any(pc.starts_with(column, "ps_")).as_py():
                continue
            reveal: Callable[[Any], Any] = revealer.identifier
        elif field.name in JSON_FIELDS:
            if not pc.any(pc.match_substring(column, ENCRYPTED_PREFIX)).as_py() and not (
                    pc.any(pc.match_substring(column, '"ps_')).as_py()):
                continue
            reveal = revealer.json_text
        else:
            if not pc.any(pc.starts_with(column, ENCRYPTED_PREFIX)).as_py():
                continue
            reveal = revealer.text
        revealed = pa.array(_column(column.to_pylist(), reveal), field.type)
        table = table.set_column(index, field, revealed)
    return table


def reveal_logs(logs: list[dict[str, Any]], revealer: Revealer | None) -> list[dict[str, Any]]:
    """Event dicts as logged (each keeps its sealed values in ``.stored`` for integrity checks)."""
    if revealer is None:
        return logs
    return [reveal_log(revealer, log) for log in logs]


def revealed_view_sql(con: Any, revealer: Revealer | None, source_sql: str, columns: list[str]) -> str:
    """SQL over ``source_sql`` with its personal columns revealed by UDFs registered on ``con``."""
    if revealer is None:
        return source_sql
    import duckdb

    def udf(reveal: Callable[[Any], Any]) -> Callable[[pa.Array], pa.Array]:
        return lambda values: pa.array([reveal(v) for v in values.to_pylist()], pa.string())

    kinds = {"secureml_reveal_id": revealer.identifier, "secureml_reveal_text": revealer.text,
             "secureml_reveal_json": revealer.json_text}
    for name, reveal in kinds.items():
        con.create_function(name, udf(reveal), [duckdb.sqltype("VARCHAR")], duckdb.sqltype("VARCHAR"),
                            type="arrow", side_effects=False)
    replaced = []
    for name in columns:
        function = ("secureml_reveal_id" if name in IDENTIFIER_COLUMNS else
                    "secureml_reveal_json" if name in JSON_FIELDS else "secureml_reveal_text")
        replaced.append(f'{function}("{name}") AS "{name}"')
    return f"SELECT * REPLACE ({', '.join(replaced)}) FROM ({source_sql})"
