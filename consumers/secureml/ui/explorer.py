"""What the explorer's pages show: from the lake's index (``secureml.ui.index``) and the query layer.

Every page reads the newest snapshot of the lake (events logged since show on the next page
load): the index brings itself up to date from the files that changed, so no page scans the
whole lake, and a timeline reads only its operation's rows. Nothing here writes; nothing depends on the
web framework, so the pages' data can be tested and benchmarked without a server.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from secureml.audit.events import envelope_fields, fields_of
from secureml.audit.exceptions import AuditValidationError
from secureml.audit.schema import JSON_FIELDS
from secureml.integrity.checkpoints import StoredCheckpoint, stored_checkpoints
from secureml.integrity.scan import intact_rows
from secureml.lake.table import Lake
from secureml.query import query_events
from secureml.query.filters import parse_time
from secureml.query.logs import ALERTS_FILE
from secureml.query.privacy import Revealer, reveal_table, revealer_for, stored_forms
from secureml.reporting.audit_compliance import REQUEST_STATES, requests_section
from secureml.reporting.source import scope_from_connection
from secureml.ui.index import IndexPending, LakeIndex

PAGE_SIZE = 50
CACHE_SECONDS = 30.0  # the keys that reveal values are looked up again this often: an erasure shows within it
MAX_PAGE = 1_000_000  # deeper than anyone pages by hand; keeps OFFSET bounded
STATUSES = ("completed", "error", "running")  # 'running': no audit_closed event yet
_ENVELOPE = envelope_fields()
# The fields of an alert (secureml.alerting's Alert.to_dict) the alerts page shows.
ALERT_COLUMNS = ("event_time", "created_at", "severity", "rule_id", "regulation", "article", "message",
                 "operation_id", "alert_id")
_HIDDEN = frozenset({"event_date"})  # the partition column connect adds


@dataclass(frozen=True)
class OperationFilters:
    """The operations page's filters; empty strings mean 'not filtered on'."""

    start: str = ""
    end: str = ""
    name: str = ""
    user: str = ""  # the user who logged, or the data subject of a request
    regulation: str = ""
    status: str = ""

    def checked(self) -> OperationFilters:
        """The filters, after checking them (bad input raises AuditValidationError naming the field)."""
        where = "ui operations"
        start = parse_time(self.start, "start", where) if self.start else None
        end = parse_time(self.end, "end", where) if self.end else None
        if start is not None and end is not None and start > end:
            raise AuditValidationError("start", f"must not be after end ({start.isoformat()} > {end.isoformat()})",
                                       where=where)
        if self.status and self.status not in STATUSES:
            raise AuditValidationError("status", f"must be one of {', '.join(STATUSES)}, got {self.status[:40]!r}",
                                       where=where)
        return self

    def query(self) -> dict[str, str]:
        """The filters that are set, as URL query parameters."""
        return {k: v for k, v in self.__dict__.items() if v}


@dataclass
class Page:
    """One page of rows, and whether another follows."""

    rows: list[dict[str, Any]]
    number: int
    has_next: bool
    size: int = PAGE_SIZE
    behind: bool = False  # from the last complete index: the lake's newest events are being indexed

    @property
    def first_index(self) -> int:
        """1-based position of the first row shown."""
        return (self.number - 1) * self.size + 1 if self.rows else 0


@dataclass
class TimelineEvent:
    """An event of an operation's timeline: its fields and what its place in the hash chain shows."""

    seq: int
    event_id: str
    event_type: str
    timestamp: dt.datetime
    level: int
    user: str | None
    fields: list[tuple[str, str]]  # (name, value as text), payload first
    hash_matches: bool  # the stored hash is the hash of the event's content
    linked: bool | None  # prev_hash is the previous event's hash (None: previous event not present)
    chain: str = field(init=False)

    def __post_init__(self) -> None:
        if not self.hash_matches:
            self.chain = "modified"
        elif self.linked is None:
            self.chain = "gap before"
        else:
            self.chain = "linked" if self.linked else "broken link"


def page_number(value: str | None) -> int:
    """A page number from a URL (1 when absent)."""
    if value in (None, ""):
        return 1
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE:
        raise AuditValidationError("page", f"must be a whole number from 1 to {MAX_PAGE}, got {value[:20]!r}",
                                   where="ui")
    return int(value)


class Explorer:
    """Read-only views of one log directory's audit trail."""

    def __init__(self, log_dir: str | os.PathLike[str], index_wait: float | None = None) -> None:
        """``index_wait``: how long a page waits for the index to catch up with the lake (see LakeIndex)."""
        self.log_dir = Path(log_dir)
        self._alerts: tuple[tuple[int, int], pa.Table] | None = None  # (size, mtime) of the record -> its alerts
        self._lock = threading.Lock()
        self._revealer: tuple[float, Revealer | None] | None = None  # (when, revealer)
        self._index = LakeIndex(self.log_dir, wait=index_wait)
        self._requests: tuple[tuple[object, ...], dict[str, int], pa.Table] | None = None  # key -> (counts, rows)

    def warm(self) -> None:
        """Start building the lake's index now (a server calls this at start, so its first page need not wait)."""
        with suppress(IndexPending):
            self._index.current()

    def _current_revealer(self) -> tuple[float, Revealer | None]:
        """The revealer (and when it was made): renewed every CACHE_SECONDS, with the keys it looked up,
        so an erasure shows on every page within that time."""
        now = time.monotonic()
        with self._lock:
            if self._revealer is None or now - self._revealer[0] >= CACHE_SECONDS:
                self._revealer = (now, revealer_for(self.log_dir))
            return self._revealer

    def _reveal(self, table: pa.Table) -> pa.Table:
        """Rows to show, with pseudonyms and ciphertexts revealed as the reading path allows."""
        return reveal_table(table, self._current_revealer()[1])

    def operations(self, filters: OperationFilters, page: int) -> Page:
        """Operations (newest start first) matching the filters, one page.

        They come from the operations index (every operation's start, close and the people its
        events name, kept per data file): the filters and the page run in memory.
        """
        filters = filters.checked()
        indexed = self._index.state()
        index = indexed.index
        listed = index.listed
        masks = []
        if filters.start:
            masks.append(pc.greater_equal(listed["started"], pa.scalar(parse_time(filters.start, "start"),
                                                                       listed.schema.field("started").type)))
        if filters.end:
            masks.append(pc.less_equal(listed["started"], pa.scalar(parse_time(filters.end, "end"),
                                                                    listed.schema.field("started").type)))
        if filters.name:
            masks.append(pc.equal(listed["operation_name"], filters.name))
        if filters.regulation:
            regulations = listed["regulations"].combine_chunks()
            named = pc.filter(pc.list_parent_indices(regulations),
                              pc.equal(pc.list_flatten(regulations), filters.regulation))
            masks.append(pc.is_in(pa.array(range(listed.num_rows), pa.int64()), named))
        if filters.status:
            masks.append(pc.equal(listed["status"], filters.status))
        if filters.user:
            forms = stored_forms(filters.user, "user", self.log_dir, "ui") or []  # as typed, and its pseudonym
            masks.append(pc.is_in(listed["operation_id"], index.involving(forms)))
        matching = listed.filter(functools.reduce(pc.and_, masks)) if masks else listed
        rows = matching.slice((page - 1) * PAGE_SIZE, PAGE_SIZE + 1)
        shown = self._reveal(rows).to_pylist()
        return Page(shown[:PAGE_SIZE], page, len(shown) > PAGE_SIZE, behind=indexed.behind)

    def operation(self, operation_id: str, page: int) -> tuple[dict[str, Any] | None, Page]:
        """An operation's summary and one page of its events in seq order, each with its chain status."""
        first = (page - 1) * PAGE_SIZE
        indexed = self._index.state()
        found = indexed.index.summary(operation_id)
        if found is None:
            if indexed.behind:  # it may be among the events being indexed
                raise IndexPending(0, indexed.state[1], 0.0)
            return None, Page([], page, False)
        # The index knows the time span of the operation's events: only the files overlapping it are read
        # (up to the lake's end while the index is behind it: the operation may have gone on).
        table = query_events(operation_id=operation_id, start_time=found["first_ts"],
                             end_time=None if indexed.behind else found["last_ts"], log_dir=self.log_dir,
                             where="ui", reveal=False)
        table = (table.filter(pc.greater_equal(table["seq"], max(0, first - 1)))
                 .sort_by([("seq", "ascending"), ("source", "ascending"), ("source_offset", "ascending")])
                 .slice(0, PAGE_SIZE + 2))
        if table.num_rows == 0 and page > 1:
            raise AuditValidationError("page", f"must be at most the operation's last page, got {page}", where="ui")
        summary = {"operation_id": operation_id, "operation_name": found["operation_name"],
                   "started": found["first_ts"], "events": found["last_seq"] + 1, "status": found["status"]}
        events = _timeline(table, self._reveal(table))
        shown = [e for e in events if e.seq >= first]
        return summary, Page([{"event": e} for e in shown[:PAGE_SIZE]], page, len(shown) > PAGE_SIZE,
                             behind=indexed.behind)

    def alerts(self, page: int) -> Page:
        """The alerter's record (log_dir/alerts), newest first; empty when no alert was recorded.

        The record only grows: it is parsed again only when its size or time changes.
        """
        table = self._alert_table()
        first = (page - 1) * PAGE_SIZE
        rows = table.slice(first, PAGE_SIZE + 1).to_pylist()
        return Page(rows[:PAGE_SIZE], page, len(rows) > PAGE_SIZE)

    def _alert_table(self) -> pa.Table:
        """Every recorded alert (the columns the page shows, as text), newest event first; cached per file state."""
        record = self.log_dir / ALERTS_FILE
        try:
            state = record.stat()
        except FileNotFoundError:
            return pa.table({c: pa.array([], pa.string()) for c in ALERT_COLUMNS})
        stamp = (state.st_size, state.st_mtime_ns)
        with self._lock:
            if self._alerts is not None and self._alerts[0] == stamp:
                return self._alerts[1]
        columns = ", ".join(f"'{c}': 'VARCHAR'" for c in ALERT_COLUMNS)
        path = str(record).replace("'", "''")
        con = duckdb.connect()
        try:
            table = con.sql(
                f"SELECT * FROM read_json('{path}', format = 'newline_delimited', ignore_errors = true, "
                f"columns = {{{columns}}}) ORDER BY event_time DESC NULLS LAST, alert_id").to_arrow_table()
        finally:
            con.close()
        with self._lock:
            self._alerts = (stamp, table)
        return table

    def requests(self, page: int, now: dt.datetime | None = None) -> tuple[dict[str, int], Page]:
        """Data-subject requests with their statutory deadlines (the reports' rules), overdue and open first.

        Every request's deadline and state are worked out once per lake state, revealer and minute
        (so a deadline passes on the page within a minute of ``now``), then paged in memory.
        """
        minute = (now or dt.datetime.now(dt.UTC)).replace(second=0, microsecond=0)
        indexed = self._index.state()
        made, revealer = self._current_revealer()
        key = (indexed.state, made, minute)
        with self._lock:
            cached = self._requests if self._requests is not None and self._requests[0] == key else None
        if cached is None:
            cached = (key, *_request_deadlines(reveal_table(indexed.index.requests, revealer), minute))
            with self._lock:
                self._requests = cached
        rows = cached[2].slice((page - 1) * PAGE_SIZE, PAGE_SIZE + 1).to_pylist()
        return cached[1], Page(rows[:PAGE_SIZE], page, len(rows) > PAGE_SIZE, behind=indexed.behind)

    def checkpoints(self) -> list[StoredCheckpoint]:
        """The lake's signed checkpoints, newest first."""
        return list(reversed(stored_checkpoints(Lake(self.log_dir).root)))

    def charts(self) -> dict[str, Any]:
        """Plotly figures (data and layout, as JSON values): events per day by type, checks, alerts.

        The lake's counts come from the index (kept per data file); the alerts' from their record.
        """
        index = self._index.current()
        figures = _figures(index.per_day.to_pylist(), index.checks.to_pylist())
        severities = pc.value_counts(self._alert_table().column("severity")).to_pylist()
        severities.sort(key=lambda c: (-c["counts"], str(c["values"])))
        alerts = {**figures["alerts"], "data": [{"type": "bar", "x": [c["values"] for c in severities],
                                                  "y": [c["counts"] for c in severities]}]}
        return {**figures, "alerts": alerts}


def _request_deadlines(requests: pa.Table, now: dt.datetime) -> tuple[dict[str, int], pa.Table]:
    """Counts by state and every request (subject, deadline, state ...) in the page's order, by the reports' rules."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("_requests", requests)
    con.execute("CREATE TEMP VIEW events AS SELECT * FROM _requests")
    scope = scope_from_connection(con, {}, owns_connection=True)  # the reports' staging, on these events only
    try:
        _section, counts = requests_section(scope.connection, now)
        rows = scope.connection.sql(
            f"""SELECT subject, request_type, regulation, received, deadline, closed_at, last_status, state
            FROM _report_requests
            ORDER BY list_position({list(REQUEST_STATES)}, state), deadline NULLS LAST, received DESC, request
            """).to_arrow_table()
    finally:
        scope.close()
    return counts.by_state, rows


def _figures(per_day: list[dict[str, Any]], checks: list[dict[str, Any]]) -> dict[str, Any]:
    """The lake's figures from its events per (day, type) and compliance checks per regulation."""
    types = sorted({r["event_type"] for r in per_day})
    days = sorted({r["day"] for r in per_day})
    counts = {(r["day"], r["event_type"]): r["n"] for r in per_day}
    layout = {"barmode": "stack", "margin": {"t": 40, "l": 50, "r": 10, "b": 40}, "height": 320,
              "xaxis": {"type": "category"}}
    return {
        "events": {"data": [{"type": "bar", "name": t, "x": days, "y": [counts.get((d, t), 0) for d in days]}
                            for t in types], "layout": {**layout, "title": {"text": "Events per day (UTC)"}}},
        "checks": {"data": [{"type": "bar", "name": "passed", "x": [r["regulation"] for r in checks],
                             "y": [r["passed"] for r in checks], "marker": {"color": "#2e7d32"}},
                            {"type": "bar", "name": "failed", "x": [r["regulation"] for r in checks],
                             "y": [r["failed"] for r in checks], "marker": {"color": "#c62828"}}],
                   "layout": {**layout, "title": {"text": "Compliance checks by regulation"}}},
        "alerts": {"data": [],  # from the alerts record, which changes without the lake
                   "layout": {**layout, "title": {"text": "Alerts by severity"}}},
    }


def _timeline(table: pa.Table, shown: pa.Table) -> list[TimelineEvent]:
    """Rows of one operation in seq order as timeline events, each link checked against the row before.

    Hashes and links are checked on the stored rows (``table``); the fields shown are ``shown``,
    the same rows as the reading path reveals them.
    """
    if table.num_rows == 0:
        return []
    matches = intact_rows(table.drop_columns([c for c in table.column_names if c in _HIDDEN])
                          .combine_chunks().to_batches()[0]).to_pylist()
    events: list[TimelineEvent] = []
    previous: dict[str, Any] | None = None
    for row, display, match in zip(table.to_pylist(), shown.to_pylist(), matches):
        if row["seq"] == 0:
            linked: bool | None = row["prev_hash"] == ""
        elif previous is not None and previous["seq"] == row["seq"] - 1:
            linked = row["prev_hash"] == previous["hash"]
        else:
            linked = None
        events.append(TimelineEvent(
            seq=row["seq"], event_id=row["event_id"], event_type=row["event_type"], timestamp=row["timestamp"],
            level=row["level"], user=display["user"], fields=_fields(display), hash_matches=bool(match),
            linked=linked,
        ))
        previous = row
    return events


def _fields(row: dict[str, Any]) -> list[tuple[str, str]]:
    """The event's payload fields, then the rest of its envelope, as text (JSON pretty-printed)."""
    payload = [n for n in fields_of(row["event_type"]) if n not in _ENVELOPE]
    shown = ("seq", "event_type", "timestamp", "level", "user", "event_id")
    rest = [n for n in _ENVELOPE if n not in shown]
    out: list[tuple[str, str]] = []
    for name in (*payload, *rest, "source", "source_offset"):
        value = row.get(name)
        if value is None or value == "" or value == []:
            continue
        if name in JSON_FIELDS and isinstance(value, str):
            with suppress(ValueError):  # not JSON after all: shown as stored
                value = json.dumps(json.loads(value), indent=2, sort_keys=True, ensure_ascii=False)
        elif isinstance(value, list):
            value = ", ".join(map(str, value))
        elif isinstance(value, dt.datetime):
            value = value.astimezone(dt.UTC).isoformat()
        out.append((name, str(value)))
    return out
