"""``secureml-audit migrate``: convert a lake of the previous format (``lake/_manifest.json``) to Delta.

The previous format listed its live Parquet files and each source's next position in a
manifest of its own. Migration copies the rows of those files into a new Delta table built
beside the old one (``lake/events.migrating``), commits the manifest's positions as the
table's app transactions in its last commit, and only then swaps the directories and removes
the old files, the manifest, its lock and its trash. A crash at any point leaves the old lake
as it was (a half-built table is discarded on the next try). Rows are copied unchanged, so
hash chains, Merkle roots and signed checkpoints stay valid: ``verify`` passes on the result.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import CommitProperties, Transaction, write_deltalake

from secureml.audit._fs import owner_only
from secureml.audit.config import resolve_config
from secureml.audit.exceptions import LakeError
from secureml.lake.rows import PARTITION_KEY, lake_schema, table_schema, with_partition
from secureml.lake.table import CATALOG, EVENTS_DIR, LAKE_DIR, PREVIOUS_FORMAT_MANIFEST, WRITER, Lake

log = logging.getLogger(__name__)

HELP = "convert a lake of the previous format (lake/_manifest.json) into a Delta table"
_BUILDING = EVENTS_DIR + ".migrating"
_PREVIOUS = EVENTS_DIR + ".previous-format"
_BATCH_ROWS = 500_000


def needs_migration(log_dir: Path) -> bool:
    """True when ``log_dir/lake`` is in the previous format."""
    return (Path(log_dir) / LAKE_DIR / PREVIOUS_FORMAT_MANIFEST).is_file()


def migrate(log_dir: str | Path, progress: Callable[[str], None] | None = None) -> int:
    """Convert the previous format in place; returns the events moved (0 when there was nothing to do)."""
    root = Path(log_dir) / LAKE_DIR
    manifest_path = root / PREVIOUS_FORMAT_MANIFEST
    if not manifest_path.is_file():
        return 0
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = [str(f["path"]) for f in manifest["files"]]
        positions = {str(s): int(p) for s, p in manifest["positions"].items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise LakeError(f"the previous-format manifest {manifest_path} is unreadable ({exc}): rebuild the lake "
                        f"from the log instead (`secureml-audit materialize --replay --log-dir {log_dir}`)") from exc
    building = root / _BUILDING
    if building.exists():
        shutil.rmtree(building)  # a migration that crashed before its swap: start over
    expected = sum(int(f["rows"]) for f in manifest["files"])
    moved = 0
    pending: list[pa.Table] = []

    def flush(final: bool) -> None:
        nonlocal pending
        data = with_partition(pa.concat_tables(pending)) if pending else table_schema().empty_table()
        transactions = [Transaction(source, position) for source, position in sorted(positions.items())]
        with owner_only():
            write_deltalake(
                str(building), data.cast(table_schema()), mode="append", partition_by=[PARTITION_KEY],
                writer_properties=WRITER,
                commit_properties=CommitProperties(app_transactions=transactions) if final else None,
            )
        pending = []

    for number, relative in enumerate(files, 1):
        path = root / relative
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as exc:
            raise LakeError(f"cannot read {path} of the previous-format lake ({exc}); restore it, or rebuild the "
                            f"lake from the log (`secureml-audit materialize --replay --log-dir {log_dir}`)") from exc
        pending.append(table.select(lake_schema().names).cast(lake_schema()))
        moved += table.num_rows
        if sum(t.num_rows for t in pending) >= _BATCH_ROWS:
            flush(final=False)
        if progress is not None:
            progress(f"migrating: {number}/{len(files)} files, {moved:,}/{expected:,} events")
    flush(final=True)
    if moved != expected:
        shutil.rmtree(building)
        raise LakeError(f"migration read {moved} events but the manifest lists {expected}; the old lake is "
                        "unchanged. Check its files, or rebuild it from the log with `materialize --replay`")
    events = root / EVENTS_DIR
    previous = root / _PREVIOUS
    if events.exists():
        events.rename(previous)
    building.rename(events)
    manifest_path.unlink()  # from here on the lake is a Delta table
    for leftover in (previous, root / "_writer.lock", Path(log_dir) / ".trash", Path(log_dir) / CATALOG):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    return moved


def migrate_if_needed(lake: Lake) -> None:
    """Convert a previous-format local lake on first use by a writer, saying so (a warning: seen by default)."""
    if lake.local and needs_migration(lake.log_dir):
        log.warning("%s is in the previous lake format; converting it to a Delta table (once)", lake.root)
        moved = migrate(lake.log_dir)
        log.warning("converted %s events; the lake is now the Delta table %s", f"{moved:,}", lake.uri)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``secureml-audit migrate``."""
    parser.description = ("Convert a lake of the previous format (lake/_manifest.json) into a Delta table, "
                          "keeping every event and the positions read; verify passes on the result.")
    parser.add_argument("--log-dir", help="directory that holds lake/ (default: $SECUREML_AUDIT_LOG_DIR or "
                        "secureml_audit_logs)")


def run(args: argparse.Namespace) -> int:
    """Migrate and say what happened."""
    directory = resolve_config(log_dir=args.log_dir, bootstrap_servers="").log_dir
    if not needs_migration(directory):
        print(f"{directory / LAKE_DIR}: nothing to migrate (no previous-format manifest)", file=sys.stderr)
        return 0
    moved = migrate(directory, progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(f"migrated {moved:,} events into the Delta table {directory / LAKE_DIR / EVENTS_DIR}; "
          f"check it with `secureml-audit verify --log-dir {directory}`", file=sys.stderr)
    return 0
