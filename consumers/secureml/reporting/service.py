"""The scheduled reporting consumer: one report per completed period, exactly once.

Each period [start, end) gets a file whose name is derived from the period alone, written to a
temporary name and renamed. The state file in the output directory remembers the end of the
last period reported, so a restart resumes there and catches up on every period completed
while it was down; without a state file the first period is the one holding the first event.
An existing file is never rewritten, so a crash between the rename and the state update
cannot produce a second report for the same period. A lock on the output directory keeps two
services from writing there at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from secureml.audit._fs import file_lock, write_atomically
from secureml.reporting import formatting as fmt
from secureml.reporting.exceptions import OutputNotWritableError, ReportServiceBusyError, ReportStateError
from secureml.reporting.generator import write_audit_report
from secureml.reporting.output import check_logo
from secureml.reporting.progress import Progress
from secureml.reporting.schedule import Schedule
from secureml.reporting.source import connect_lake, first_event_time, scope_from_connection

STATE_FILE = ".secureml-report-state.json"
LOCK_FILE = ".secureml-report.lock"
_LAST_MICROSECOND = timedelta(microseconds=1)


def utc_now() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


@dataclass
class ReportService:
    """Writes the report of every completed period of a schedule into output_dir."""

    log_dir: str | None
    output_dir: Path
    schedule: Schedule
    every: str
    filters: dict[str, object] = field(default_factory=dict)
    title: str = "Audit Trail Report"
    logo_path: str | None = None
    include_charts: bool = True
    extension: str = ".pdf"
    grace: timedelta = timedelta(minutes=1)
    prefix: str = "audit_report"
    progress: bool | None = None
    clock: Callable[[], datetime] | None = None  # None: utc_now, looked up at each call

    def now(self) -> datetime:
        """The current time, from the injected clock or utc_now."""
        return (self.clock or utc_now)()

    def run_once(self) -> list[Path]:
        """Write the reports of all periods completed (end + grace <= now) and not reported yet."""
        self._check_output_dir()
        logo = check_logo(self.logo_path)
        with self._locked():
            now = self.now()
            with connect_lake(self.log_dir) as connection:
                return self._catch_up(connection, now, logo)

    def _catch_up(self, connection: duckdb.DuckDBPyConnection, now: datetime, logo: str | None) -> list[Path]:
        """Report every completed period from the resume point on, saving the state after each."""
        start = self._resume_point(connection)
        written: list[Path] = []
        while start is not None:
            end = self.schedule.next_boundary(start)
            if end + self.grace > now:
                break
            path = self.output_dir / self.file_name(start, end)
            if not path.exists():
                filters = {**self.filters, "log_dir": self.log_dir, "start_time": start,
                           "end_time": end - _LAST_MICROSECOND}
                scope = scope_from_connection(connection, filters)
                try:
                    write_audit_report(
                        scope, path, title=f"{self.title}: {fmt.utc(start)} to {fmt.utc(end)} UTC", logo_path=logo,
                        include_charts=self.include_charts, progress=Progress(self.progress),
                        report_id=self._report_id(start, end),
                    )
                finally:
                    scope.close()
                written.append(path)
            self._save_state(end)
            start = end
        return written

    def serve(self, stop: threading.Event, on_report: Callable[[Path], object] = lambda _path: None) -> None:
        """Run until stop is set: report completed periods, then sleep until the next one completes.

        An error ends the loop; restarted (by systemd, Docker, ...), the service catches up.
        """
        while not stop.is_set():
            for path in self.run_once():
                on_report(path)
            now = self.now()
            wake = self.schedule.next_boundary(self.schedule.period_start(now - self.grace)) + self.grace
            stop.wait(max(1.0, (wake - now).total_seconds()))

    def file_name(self, start: datetime, end: datetime) -> str:
        """The report file of one period, e.g. audit_report_20240101T0000Z_20240101T0100Z.pdf."""
        return f"{self.prefix}_{start:%Y%m%dT%H%MZ}_{end:%Y%m%dT%H%MZ}{self.extension}"

    def _resume_point(self, connection: duckdb.DuckDBPyConnection) -> datetime | None:
        """The end of the last period reported, else the start of the period of the first event."""
        state = self.output_dir / STATE_FILE
        if state.exists():
            try:
                return datetime.fromisoformat(json.loads(state.read_text(encoding="utf-8"))["last_period_end"])
            except (ValueError, KeyError, TypeError) as error:
                raise ReportStateError(
                    f"The report state file {state} is unreadable ({error}); delete it to resume from "
                    "the first event (existing reports are kept, never rewritten)."
                ) from error
        first = first_event_time(connection, self.filters)
        return None if first is None else self.schedule.period_start(first)

    def _save_state(self, last_period_end: datetime) -> None:
        """Record the end of the last period reported, atomically."""
        state = {"last_period_end": last_period_end.isoformat(), "every": self.every}
        write_atomically(self.output_dir / STATE_FILE, json.dumps(state).encode())

    def _report_id(self, start: datetime, end: datetime) -> str:
        """The same id for the same period and selection, whoever writes it."""
        key = json.dumps([start.isoformat(), end.isoformat(), self.log_dir, sorted(map(str, self.filters.items()))])
        return "R-" + hashlib.sha256(key.encode()).hexdigest()[:12].upper()

    def _check_output_dir(self) -> None:
        """Create the output directory, or say why it cannot be used."""
        try:
            self.output_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as error:
            raise OutputNotWritableError(str(self.output_dir), error.strerror or str(error)) from error
        if not os.access(self.output_dir, os.W_OK | os.X_OK):
            raise OutputNotWritableError(str(self.output_dir), "the directory is not writable")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the output directory's lock, or fail if another service holds it."""
        with file_lock(self.output_dir / LOCK_FILE, blocking=False) as held:
            if not held:
                raise ReportServiceBusyError(
                    f"Another report service is writing to {self.output_dir}; stop it first, or give "
                    "this one another --output-dir."
                )
            yield
