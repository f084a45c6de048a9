"""The materializer: turns the event stream into the Parquet lake, exactly once.

``materialize(log_dir, bootstrap_servers=..., once=True)`` reads Kafka (or, without bootstrap
servers, the embedded log of ``log_dir``) and commits batches to the lake; the lake's manifest
holds the positions, so a restart after any crash resumes where the lake stands.
"""

from __future__ import annotations

from secureml.materializer.runner import Materializer, MaterializeStats, materialize, materialize_embedded

__all__ = ["MaterializeStats", "Materializer", "materialize", "materialize_embedded"]
