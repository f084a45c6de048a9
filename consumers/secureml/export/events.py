"""The one way exports read events: lake rows or stream records -> the event dicts of ``get_audit_logs``.

Batch mode reads one version of the lake (plus the embedded log's unmaterialised tail, as
every reader does) source by source in position order, ``batch_events`` rows at a time, so
memory is bounded by the batch, not the lake. Follow mode decodes Kafka records into the same
lake rows. Both end in ``event_dicts``: the single place where rows become the dicts that
formats see (and where the privacy layer's view of an event applies to exports).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from secureml.query.filters import select_events
from secureml.query.logs import _to_logs, connect
from secureml.stream.accept import accepted_events
from secureml.stream.sources import Batch, Item

log = logging.getLogger(__name__)

Positions = dict[str, int]  # source -> position of the last event exported from it


@dataclass
class EventBatch:
    """Events in position order, and the position of the last one read from each source."""

    events: list[dict[str, Any]] = field(default_factory=list)
    done: Positions = field(default_factory=dict)


def event_dicts(rows: pa.Table) -> list[dict[str, Any]]:
    """Lake rows (event columns, any extra columns ignored) as event dicts, the shape of ``get_audit_logs``."""
    return _to_logs(rows)


def _page_sql(where: str) -> str:
    return (f"SELECT * FROM events WHERE source = ? AND source_offset >= ? AND source_offset < ?{where} "
            "ORDER BY source_offset LIMIT ?")


@dataclass
class LakeReader:
    """Events of one lake version past ``done``, filtered by time, in (source, position) order."""

    log_dir: str | None
    start_time: object = None
    end_time: object = None
    batch_events: int = 10_000
    as_of: int | str | None = None

    def __post_init__(self) -> None:
        self._selection = select_events(start_time=self.start_time, end_time=self.end_time, where="export")
        self._con = connect(self.log_dir, as_of=self.as_of)  # one version, fixed for this reader
        self._where = self._selection.where.replace(" WHERE ", " AND ", 1)

    def pending(self, done: Positions) -> int:
        """How many events remain to export (for progress)."""
        total = 0
        for (source,) in self._con.sql("SELECT DISTINCT source FROM events").fetchall():
            total += self._con.sql(
                f"SELECT count(*) FROM events WHERE source = ? AND source_offset > ?{self._where}",
                params=[source, done.get(source, -1), *self._selection.params]).fetchall()[0][0]
        return total

    def batches(self, done: Positions) -> Iterator[EventBatch]:
        """Batches of at most ``batch_events`` events, in position order per source.

        Each page is a top-N query over a window of positions: the window keeps the scan to the
        files (and row groups) that hold it, the limit keeps memory to the batch. The window
        narrows after a full page and widens after a sparse one.
        """
        sql = _page_sql(self._where)
        for source, low, high, count in self._con.sql(
                f"SELECT source, min(source_offset), max(source_offset), count(*) FROM events "
                f"WHERE TRUE{self._where} GROUP BY source ORDER BY source", params=self._selection.params).fetchall():
            start = max(low, done.get(source, -1) + 1)
            width = max(1, (high - low + 1) * self.batch_events // max(count, 1))
            while start <= high:
                end = min(start + width, high + 1)  # never past the last position (nor int64)
                params = [source, start, end, *self._selection.params, self.batch_events]
                rows = self._con.sql(sql, params=params).to_arrow_table()
                if rows.num_rows == 0:
                    start, width = end, width * 2
                    continue
                last = int(rows["source_offset"][-1].as_py())
                if rows.num_rows == self.batch_events:
                    if last + 1 < end:  # the window held more than a batch: go on inside it, narrower
                        width = max(1, width // 2)
                    start = last + 1
                else:
                    start = end
                    if rows.num_rows < self.batch_events // 2:
                        width *= 2
                yield EventBatch(event_dicts(rows), {source: last})

    def close(self) -> None:
        """Release the DuckDB connection."""
        self._con.close()


def _skip(item: Item, reason: str) -> None:
    """A refused message is the materializer's to dead-letter; an export leaves it out and says so."""
    log.warning("export: skipped %s at %s: %s", item.source, item.position, reason)


def stream_events(batches: list[Batch]) -> EventBatch:
    """Stream records (sealed Avro, as every source reads them) as event dicts, refusing what the lake refuses."""
    done: Positions = {batch.source: batch.positions[-1] for batch in batches if batch.positions}
    table = accepted_events(batches, _skip)
    return EventBatch([] if table is None else event_dicts(table), done)
