"""The Avro schema of an audit event: loaded once from schemas/*.avsc, the single wire definition."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
SCHEMA_HEADER = "secureml-schema"  # Kafka header naming the writer schema version

# Free-form values are stored as JSON text so DuckDB's JSON functions can query them.
JSON_FIELDS = frozenset(
    {"context", "parameters", "metrics", "privacy_parameters", "output", "details", "arguments", "return_value"}
)
TIMESTAMP_FIELDS = ("operation_start", "timestamp")


def schema_dirs() -> list[Path]:
    here = Path(__file__).resolve().parent
    # Installed wheel: secureml/audit/schemas; editable or source checkout: <repo>/schemas.
    return [here / "schemas", here.parents[2] / "schemas"]


@cache
def load_schema(version: int = SCHEMA_VERSION) -> dict[str, Any]:
    """The parsed JSON of schemas/audit_event.v<version>.avsc."""
    name = f"audit_event.v{version}.avsc"
    for directory in schema_dirs():
        path = directory / name
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
    raise FileNotFoundError(
        f"Avro schema {name} not found in {[str(d) for d in schema_dirs()]}; reinstall secureml-audit"
    )


def field_names(version: int = SCHEMA_VERSION) -> tuple[str, ...]:
    """Field names of the event record in schema order."""
    return tuple(f["name"] for f in load_schema(version)["fields"])


def known_versions() -> list[int]:
    """Every schema version shipped with this installation."""
    versions: set[int] = set()
    for directory in schema_dirs():
        for path in directory.glob("audit_event.v*.avsc"):
            versions.add(int(path.stem.rsplit(".v", 1)[1]))
    return sorted(versions)
