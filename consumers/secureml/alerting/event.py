"""An audit event as the rules see it: the decoded record plus where it is stored."""

from __future__ import annotations

import json
from typing import Any

from secureml.alerting.alert import Trigger


class Event:
    """A decoded audit event (``event["dataset_name"]``, timestamps as UTC micros) and its log position."""

    __slots__ = ("record", "source", "position", "_parsed")

    def __init__(self, record: dict[str, Any], source: str, position: int) -> None:
        self.record = record
        self.source = source
        self.position = position
        self._parsed: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        return self.record[name]

    def get(self, name: str, default: Any = None) -> Any:
        """A field of the record, or default when absent or null."""
        value = self.record.get(name)
        return default if value is None else value

    @property
    def event_type(self) -> str:
        """audit_started, data_access, ... or a custom type."""
        return str(self.record["event_type"])

    @property
    def event_id(self) -> str:
        """Unique id of the event (operation_id:seq)."""
        return str(self.record["event_id"])

    @property
    def operation_id(self) -> str:
        """Id of the event's audit trail."""
        return str(self.record["operation_id"])

    @property
    def timestamp(self) -> int:
        """UTC time of the event in microseconds."""
        return int(self.record["timestamp"])

    @property
    def user(self) -> str | None:
        """Who performed the action, when recorded."""
        user = self.record.get("user")
        return user if user else None

    def json(self, name: str) -> Any:
        """A JSON text field (details, parameters, context, ...) parsed, or None when null or not JSON."""
        if name not in self._parsed:
            raw = self.record.get(name)
            try:
                self._parsed[name] = None if raw is None else json.loads(raw)
            except (TypeError, ValueError):
                self._parsed[name] = None
        return self._parsed[name]

    def json_object(self, name: str) -> dict[str, Any]:
        """A JSON object field parsed, or {} when null or not an object."""
        value = self.json(name)
        return value if isinstance(value, dict) else {}

    def trigger(self) -> Trigger:
        """This event as an alert trigger."""
        return Trigger(self.operation_id, int(self.record["seq"]), self.event_id, self.source, self.position)

    def __repr__(self) -> str:
        return f"Event({self.event_type!r}, {self.event_id!r}, {self.source}@{self.position})"
