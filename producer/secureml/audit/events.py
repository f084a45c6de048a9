"""Event types, their payload fields, and the argument rules of every ``log_*`` call."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import json
import math
import pathlib
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from secureml.audit.codec import PayloadPlan, field_encoders
from secureml.audit.exceptions import AuditValidationError

# event_type -> payload fields it carries, in the order of the logging call's arguments.
EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    "audit_started": (),
    "data_access": ("dataset_name", "columns_accessed", "num_records", "purpose"),
    "data_transformation": ("transformation_type", "input_data", "output_data", "parameters"),
    "model_training": ("model_type", "dataset_name", "parameters", "metrics", "privacy_parameters"),
    "model_inference": ("model_id", "input_data", "output", "confidence"),
    "compliance_check": ("check_type", "regulation", "result", "details"),
    "user_request": ("request_type", "user_id", "details", "status"),
    "function_call": ("function_name", "module", "arguments"),
    "function_return": ("function_name", "module", "return_value", "execution_time"),
    "error": ("error_type", "message", "details"),
    "audit_closed": ("status", "details", "event_count"),
}
CUSTOM_EVENT_FIELDS = ("details",)
# The logging module's level names, without importing logging (a model server may not).
LEVELS = {"CRITICAL": 50, "FATAL": 50, "ERROR": 40, "WARN": 30, "WARNING": 30, "INFO": 20, "DEBUG": 10, "NOTSET": 0}
EVENT_TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")

# Limits, the same whatever the transport (README, "Limits"): an event that passes them is
# stored and reads back exactly; one that does not is refused at the call, before anything is
# recorded. Kafka's default largest message (1 MiB, key and headers included) bounds the event.
MAX_EVENT_BYTES = 900_000  # an encoded event
MAX_DEPTH = 32  # nesting of dicts and lists inside a JSON value
MAX_LIST_ITEMS = 10_000  # columns_accessed, regulations
MAX_LONG = 2**63 - 1  # counts (num_records, ...): Avro long
MAX_LEVEL = 2**31 - 1  # levels: Avro int

_PAYLOAD_START = "dataset_name"
_PAYLOAD_END = "prev_hash"  # exclusive


def payload_fields() -> tuple[tuple[str, Any], ...]:
    """(name, encoder) of the optional payload fields, between the envelope and the chain."""
    encoders = field_encoders()
    names = [n for n, _ in encoders]
    return encoders[names.index(_PAYLOAD_START) : names.index(_PAYLOAD_END)]


def envelope_fields() -> tuple[str, ...]:
    """Names of the fields every event carries (all but the payload), in schema order."""
    names = [n for n, _ in field_encoders()]
    payload = set(names[names.index(_PAYLOAD_START) : names.index(_PAYLOAD_END)])
    return tuple(n for n in names if n not in payload)


PLANS: dict[str, PayloadPlan] = {t: PayloadPlan(f, payload_fields()) for t, f in EVENT_FIELDS.items()}
CUSTOM_PLAN = PayloadPlan(CUSTOM_EVENT_FIELDS, payload_fields())


def fields_of(event_type: str) -> tuple[str, ...]:
    """Payload fields carried by an event type (custom types carry ``details``)."""
    return EVENT_FIELDS.get(event_type, CUSTOM_EVENT_FIELDS)


# -- argument rules ----------------------------------------------------------------------------


def text(value: Any, field: str, where: str) -> str:
    """A non-empty string."""
    if not isinstance(value, str):
        raise AuditValidationError(field, f"must be a string, got {type(value).__name__}", where=where)
    if not value.strip():
        raise AuditValidationError(field, "must not be empty", where=where)
    if not value.isascii():
        _utf8(value, field, where)
    return value


def _utf8(value: str, field: str, where: str) -> None:
    """Refuse text that has no UTF-8 form (lone surrogates such as '\\ud800')."""
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        raise AuditValidationError(
            field, f"must be valid Unicode text: {value[exc.start:exc.end]!a} at index {exc.start} is a lone "
            "surrogate (decode bytes with errors='replace' or 'backslashreplace' first)", where=where) from None


def optional_text(value: Any, field: str, where: str) -> str | None:
    """None or a non-empty string."""
    return None if value is None else text(value, field, where)


def count(value: Any, field: str, where: str, limit: int = MAX_LONG) -> int:
    """A non-negative integer up to ``limit`` (booleans are not counts)."""
    if isinstance(value, bool) or not isinstance(value, int):
        if hasattr(value, "__index__") and not isinstance(value, bool):
            value = value.__index__()  # numpy integers
        else:
            raise AuditValidationError(field, f"must be an integer, got {type(value).__name__}", where=where)
    if value < 0:
        raise AuditValidationError(field, f"must be >= 0, got {value}", where=where)
    if value > limit:
        raise AuditValidationError(field, f"must be <= {limit}, got {value}", where=where)
    return int(value)


def text_list(value: Any, field: str, where: str) -> list[str]:
    """A list (or tuple) of non-empty strings."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise AuditValidationError(field, f"must be a list of strings, got {type(value).__name__}", where=where)
    if len(value) > MAX_LIST_ITEMS:
        raise AuditValidationError(field, f"must hold at most {MAX_LIST_ITEMS} items, got {len(value)}", where=where)
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise AuditValidationError(f"{field}[{i}]", "must be a non-empty string", where=where)
        if not item.isascii():
            _utf8(item, f"{field}[{i}]", where)
    return list(value)


def probability(value: Any, field: str, where: str) -> float | None:
    """None or a real number in [0, 1]."""
    if value is None:
        return None
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        raise AuditValidationError(field, "must be a number in [0, 1], got a boolean", where=where)
    if not isinstance(value, (int, float)):
        try:
            value = float(value)  # numpy floats
        except (TypeError, ValueError):
            raise AuditValidationError(
                field, f"must be a number in [0, 1], got {type(value).__name__}", where=where
            ) from None
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise AuditValidationError(field, f"must be within [0, 1], got {value}", where=where)
    return float(value)


def boolean(value: Any, field: str, where: str) -> bool:
    """Exactly True or False."""
    if value is True or value is False:
        return value
    if type(value).__name__ == "bool_":  # numpy.bool_
        return bool(value)
    raise AuditValidationError(field, f"must be True or False, got {type(value).__name__}", where=where)


def level(value: Any, field: str, where: str) -> int:
    """A logging level: an int >= 0 or a level name such as 'INFO'."""
    if isinstance(value, str):
        resolved = LEVELS.get(value.upper())
        if resolved is not None:
            return resolved
        raise AuditValidationError(field, f"unknown level name {value!r}", where=where)
    return count(value, field, where, MAX_LEVEL)


def seconds(value: Any, field: str, where: str) -> float:
    """A finite, non-negative duration in seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise AuditValidationError(field, "must be a finite number of seconds >= 0", where=where)
    return float(value)


def _is_uuid(value: Any) -> bool:
    # A UUID exists only once its module was imported: no need to import it here (it is slow).
    module = sys.modules.get("uuid")
    return module is not None and isinstance(value, module.UUID)


def _json_default(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, (decimal.Decimal, pathlib.PurePath, enum.Enum)) or _is_uuid(value):
        return str(value.value if isinstance(value, enum.Enum) else value)
    if hasattr(type(value), "__dataclass_fields__") and not isinstance(value, type):
        import dataclasses  # only for a dataclass value: importing it costs a model server ~25 ms at start

        return dataclasses.asdict(value)
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:  # numpy scalars
        return value.item()
    if hasattr(value, "tolist") and getattr(value, "size", 1 << 20) <= 10_000:  # small arrays
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def json_value(value: Any, field: str, where: str) -> str:
    """Any JSON-serialisable value as compact JSON text (keys sorted, so equal values give equal text)."""
    kind = type(value)
    if kind is str:
        if not value.isascii():
            _utf8(value, field, where)
        return _encode_json_string(value)
    if kind is bool or value is None:
        return _JSON_SCALARS[value]
    if kind is int:
        return int.__repr__(value)
    if isinstance(value, (dict, list, tuple)):
        _within_depth(value, field, where)
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=_json_default, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise AuditValidationError(field, f"must be JSON-serialisable: {exc}", where=where) from None
    except RecursionError:  # nesting built by a default= conversion (e.g. a deep dataclass)
        raise AuditValidationError(field, f"must not nest dicts and lists deeper than {MAX_DEPTH}",
                                   where=where) from None
    if not text.isascii():
        _utf8(text, field, where)
    return text


def _within_depth(value: dict[Any, Any] | list[Any] | tuple[Any, ...], field: str, where: str) -> None:
    """Refuse dicts and lists nested deeper than MAX_DEPTH (walks containers only, without recursion)."""
    level = [value]
    for _depth in range(MAX_DEPTH):
        inner = [v for c in level for v in (c.values() if isinstance(c, dict) else c)
                 if isinstance(v, (dict, list, tuple))]
        if not inner:
            return
        level = inner
    raise AuditValidationError(field, f"must not nest dicts and lists deeper than {MAX_DEPTH}", where=where)


_encode_json_string: Callable[[str], str] = json.encoder.encode_basestring  # type: ignore[attr-defined]
_JSON_SCALARS = {True: "true", False: "false", None: "null"}


def json_object(value: Any, field: str, where: str, *, required: bool = False) -> str | None:
    """A mapping as JSON text; None stays None unless required."""
    if value is None:
        if required:
            raise AuditValidationError(field, "must be a dict, got None", where=where)
        return None
    if not isinstance(value, Mapping):
        raise AuditValidationError(field, f"must be a dict, got {type(value).__name__}", where=where)
    for key in value:
        if not isinstance(key, str):
            raise AuditValidationError(field, f"keys must be strings, got {type(key).__name__}", where=where)
    return json_value(dict(value), field, where)
