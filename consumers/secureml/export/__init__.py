"""Exports of the audit trail into the tools platform teams run: OCSF (SIEMs), OpenLineage (Marquez), JSONL.

``events`` reads events (from one lake version, or from the Kafka topic) as the event dicts
of ``get_audit_logs``; ``formats`` turns each into output records; ``sinks`` deliver them
(file, HTTP, Kafka); ``runner`` ties them together in batch and ``--follow`` modes.
"""
