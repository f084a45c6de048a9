"""The lake: a Delta Lake table of audit events (``table``), its rows (``rows``), the DuckDB catalog (``catalog``)."""

from __future__ import annotations

from secureml.lake.rows import PARTITION_KEY, events_table, lake_schema, table_schema
from secureml.lake.table import Lake, LakeFile, Snapshot

__all__ = ["PARTITION_KEY", "Lake", "LakeFile", "Snapshot", "events_table", "lake_schema", "table_schema"]
