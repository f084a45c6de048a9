"""DuckDB over exactly one version of the lake: the SQL readers use, and ``log_dir/audit.duckdb``.

``audit.duckdb`` is for the duckdb CLI (``duckdb log_dir/audit.duckdb "SELECT count(*) FROM
events"``): views ``events`` and ``operations`` that list the data files of one Delta version
(no glob, so a compaction in progress or an orphan left by a crash is never counted), and a
table ``lake_version`` saying which version and table they show. The materializer rebuilds
the file whenever it is missing, empty or stale, always into a new file renamed over the old
one, so no long-lived writer ever holds it and a reader that has it open keeps a consistent
view. Which version it shows is also stamped beside it (``.audit.duckdb.version``), so checking
it never opens, and so never locks, the file a user's duckdb CLI may be opening.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import duckdb

from secureml.audit._fs import make_private_dir, replacing, write_atomically
from secureml.audit.config import resolve_config
from secureml.audit.exceptions import LakeDamageWarning, LakeError
from secureml.lake.rows import PARTITION_KEY, table_schema
from secureml.lake.table import CATALOG, Lake, Snapshot

log = logging.getLogger(__name__)

STORAGE_VERSION = "v1.5.0"  # readable by the duckdb CLI of the previous release line (PyPI's lags behind)

OPERATIONS_VIEW_SQL = """
CREATE VIEW operations AS
SELECT
    operation_id,
    any_value(operation_name) AS operation_name,
    min(operation_start) AS start_time,
    max(timestamp) FILTER (WHERE event_type = 'audit_closed') AS end_time,
    any_value(status) FILTER (WHERE event_type = 'audit_closed') AS status,
    count(*) AS events,
    max(seq) AS last_seq,
    list(DISTINCT "user") FILTER (WHERE "user" IS NOT NULL) AS users,
    any_value(regulations) AS regulations
FROM events
GROUP BY operation_id
"""


def quoted_list(paths: list[str]) -> str:
    """A DuckDB list literal of file paths."""
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


def parquet_sql(paths: list[str], *, with_date: bool) -> str:
    """SQL reading exactly these data files (``event_date`` from their partition directory if asked)."""
    if with_date:
        return (f"SELECT * FROM read_parquet({quoted_list(paths)}, union_by_name = true, hive_partitioning = true, "
                f"hive_types = {{'{PARTITION_KEY}': DATE}})")
    return f"SELECT * FROM read_parquet({quoted_list(paths)}, union_by_name = true, hive_partitioning = false)"


def events_sql(
    con: duckdb.DuckDBPyConnection, lake: Lake, snapshot: Snapshot, *, with_date: bool = False,
    start_us: int | None = None, end_us: int | None = None, files: Callable[[list[str]], list[str]] | None = None,
) -> str | None:
    """SQL over the events of one table version (None when it has none), files pruned by time range.

    ``files`` narrows a local table's files further (an index of what they hold).

    A local table is read by DuckDB's Parquet reader from exactly the version's files; an
    object-store table through delta-rs's own file system, as a pyarrow dataset (DuckDB's
    httpfs extension is not needed).
    """
    if not snapshot.files or snapshot.table is None:
        return None
    if lake.local:
        uris = snapshot.uris(start_us, end_us)
        if files is not None:
            uris = files(uris)
        present = [uri for uri in uris if os.path.exists(uri)]
        if len(present) < len(uris):
            gone = [Path(uri).name for uri in uris if uri not in set(present)]
            warnings.warn(LakeDamageWarning(
                f"{len(gone)} data file(s) of version {snapshot.version} of the lake at {lake.uri} are missing "
                f"({', '.join(gone[:3])}{', ...' if len(gone) > 3 else ''}): serving the rows of the other files. "
                "`secureml-audit verify` names what was lost"), stacklevel=3)
        return parquet_sql(present, with_date=with_date) if present else None
    name = f"lake_v{snapshot.version}"
    con.register(name, snapshot.table.to_pyarrow_dataset(as_large_types=True))
    return f"SELECT * FROM {name}" if with_date else f"SELECT * EXCLUDE ({PARTITION_KEY}) FROM {name}"


def _stamp(path: Path) -> Path:
    """The file beside the catalog that says which table version it shows."""
    return path.with_name(f".{path.name}.version")


def catalog_state(path: Path) -> tuple[str, int] | None:
    """(table URI, version) a catalog file shows, or None when it is missing, empty or not ours.

    Read from the stamp file the materializer writes beside it, never by opening the catalog:
    a duckdb CLI opening it read-write must not find it locked by our check.
    """
    try:
        if path.stat().st_size == 0:
            return None
        stamp = json.loads(_stamp(path).read_text(encoding="utf-8"))
        return str(stamp["uri"]), int(stamp["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def ensure_catalog(lake: Lake, snapshot: Snapshot | None = None, path: Path | None = None) -> Path | None:
    """Rebuild ``log_dir/audit.duckdb`` (or ``path``) unless it already shows the newest version; returns it.

    Returns None when there is no table yet or the directory cannot be written, and for a
    table on object storage: DuckDB would need its httpfs extension to read those files (where
    it can be installed, ``delta_scan('s3://...')`` reads the table directly).
    """
    if not lake.local:
        return None
    snapshot = snapshot or lake.snapshot()
    if snapshot.version is None:
        return None
    path = path or lake.log_dir / CATALOG
    if catalog_state(path) == (lake.uri, snapshot.version):
        return path
    try:
        make_private_dir(path.parent, link_ok=True)  # a Kafka-mode log_dir may hold nothing else yet
        with replacing(path) as tmp:
            _write_catalog(tmp, lake, snapshot)
        write_atomically(_stamp(path), json.dumps({"uri": lake.uri, "version": snapshot.version}).encode())
    except (duckdb.Error, OSError) as exc:
        log.warning("cannot write the DuckDB catalog %s: %s", path, exc)
        return None
    return path


def _write_catalog(path: Path, lake: Lake, snapshot: Snapshot) -> None:
    """A new catalog file showing one table version."""
    con = duckdb.connect(str(path), config={"storage_compatibility_version": STORAGE_VERSION})
    try:
        if snapshot.files:
            con.execute(f"CREATE VIEW events AS {parquet_sql([f.uri for f in snapshot.files], with_date=True)}")
        else:  # an empty version: the same columns, no rows
            con.register("empty_events", table_schema().empty_table())
            con.execute("CREATE TABLE no_events AS SELECT * FROM empty_events")
            con.execute("CREATE VIEW events AS SELECT * FROM no_events")
        con.execute(OPERATIONS_VIEW_SQL)
        con.execute("CREATE TABLE lake_version (uri VARCHAR, version BIGINT)")
        con.execute("INSERT INTO lake_version VALUES (?, ?)", [lake.uri, snapshot.version])
    finally:
        con.close()


HELP = "write the DuckDB catalog (views events, operations) for the duckdb CLI, e.g. for a copy of a lake"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``secureml-audit catalog``."""
    parser.description = ("Write the DuckDB catalog (views events and operations over one version of the lake) "
                          "for the duckdb CLI: `duckdb LOG_DIR/audit.duckdb \"SELECT count(*) FROM events\"`. "
                          "Works on a read-only copy of a lake with --output elsewhere.")
    parser.add_argument("--log-dir", help="directory that holds lake/ (default: $SECUREML_AUDIT_LOG_DIR or "
                        "secureml_audit_logs)")
    parser.add_argument("--output", type=Path, help="where to write it (default: LOG_DIR/audit.duckdb); a path "
                        "outside a read-only copy of a lake, e.g. /tmp/audit.duckdb")


def run(args: argparse.Namespace) -> int:
    """Write the catalog of the newest table version and say where."""
    lake = Lake(resolve_config(log_dir=args.log_dir, bootstrap_servers="").log_dir)
    if not lake.local:
        raise LakeError(f"the lake at {lake.uri} is on object storage: DuckDB needs its httpfs extension to read it; "
                        "use secureml.audit.connect() instead, or delta_scan() where extensions can be installed")
    snapshot = lake.snapshot()
    if snapshot.version is None:
        raise LakeError(f"no lake at {lake.uri} yet: materialize the events first "
                        f"(`secureml-audit materialize --once --log-dir {lake.log_dir}`)")
    path = ensure_catalog(lake, snapshot, args.output)
    if path is None:
        raise LakeError("cannot write the catalog there: give --output a writable path, e.g. /tmp/audit.duckdb")
    print(f"{path}: views events and operations over table version {snapshot.version} "
          f"({snapshot.rows:,} events); open it with: duckdb {path}", file=sys.stderr)
    return 0
