"""Reading the audit trail back: ``get_audit_logs`` (dicts, Arrow, pandas, Polars) and ``connect`` (SQL)."""

from __future__ import annotations

from secureml.query.logs import connect, count_events, get_audit_logs, lake_state, query_events, query_view

__all__ = ["connect", "count_events", "get_audit_logs", "lake_state", "query_events", "query_view"]
