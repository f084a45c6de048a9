"""Scheduled reports: cron and interval periods, and exactly one report per completed period across restarts."""

from __future__ import annotations

import argparse
import fcntl
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.reporting import T0, EventClock, fact, pdf_text, record_sample

from secureml.audit import AuditTrail, connect
from secureml.reporting import InvalidScheduleError, ReportServiceBusyError, ReportStateError
from secureml.reporting.cli import configure_parser, run
from secureml.reporting.cron import CronExpression
from secureml.reporting.schedule import parse_every
from secureml.reporting.service import LOCK_FILE, STATE_FILE, ReportService

UTC = UTC


def at(text: str) -> datetime:
    """A naive UTC time from 'YYYY-MM-DD HH:MM'."""
    return datetime.fromisoformat(text)


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("*/15 9-17 * * mon-fri", "2024-01-05 17:50", "2024-01-08 09:00"),  # Friday evening -> Monday
        ("*/15 9-17 * * mon-fri", "2024-01-08 09:00", "2024-01-08 09:15"),
        ("5,35 * * jan,jul *", "2024-01-31 23:40", "2024-07-01 00:05"),
        ("0 0 13 * fri", "2024-09-01 00:00", "2024-09-06 00:00"),  # both day fields: either matches
        ("0 0 13 * fri", "2024-09-06 00:00", "2024-09-13 00:00"),
        ("0 12 * * 7", "2024-01-01 00:00", "2024-01-07 12:00"),  # 7 is Sunday
        ("10/20 * * * *", "2024-01-01 00:30", "2024-01-01 00:50"),
        ("0 0 29 2 *", "2024-03-01 00:00", "2028-02-29 00:00"),
        ("0 6 * * *", "2024-12-31 06:00", "2025-01-01 06:00"),
    ],
)
def test_cron_next_fire_time(expression: str, after: str, expected: str) -> None:
    """next_after finds the first fire time strictly after a moment, across days, months and years."""
    assert CronExpression.parse(expression).next_after(at(after)) == at(expected)


@pytest.mark.parametrize(
    ("expression", "moment", "expected"),
    [
        ("*/15 9-17 * * mon-fri", "2024-01-06 12:00", "2024-01-05 17:45"),
        ("0 6 * * *", "2024-01-15 06:00", "2024-01-15 06:00"),
        ("0 6 * * *", "2024-01-15 05:59", "2024-01-14 06:00"),
        ("30 2 1 * *", "2024-03-01 02:29", "2024-02-01 02:30"),
    ],
)
def test_cron_latest_fire_time(expression: str, moment: str, expected: str) -> None:
    """latest_at_or_before finds the fire time that starts the period holding a moment."""
    assert CronExpression.parse(expression).latest_at_or_before(at(moment)) == at(expected)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("* * * *", "has 4 field"),
        ("61 * * * *", "outside 0-59"),
        ("5-1 * * * *", "reversed"),
        ("*/0 * * * *", "1 or more"),
        ("x * * * *", "not a number"),
        ("0 0 * foo *", "not a number or a name"),
        ("0 0 30 2 *", "never fires"),
    ],
)
def test_bad_cron_expressions_are_explained(text: str, message: str) -> None:
    """Malformed or impossible cron expressions raise InvalidScheduleError naming the field."""
    with pytest.raises(InvalidScheduleError, match=message):
        CronExpression.parse(text)


def test_intervals_align_on_utc() -> None:
    """1h periods start on the hour, 15m on the quarter, 1d at midnight UTC."""
    moment = datetime(2024, 1, 15, 10, 37, 12, tzinfo=UTC)
    assert parse_every("1h").period_start(moment) == datetime(2024, 1, 15, 10, tzinfo=UTC)
    assert parse_every("15m").next_boundary(moment) == datetime(2024, 1, 15, 10, 45, tzinfo=UTC)
    assert parse_every("1d").next_boundary(datetime(2024, 1, 15, tzinfo=UTC)) == datetime(2024, 1, 16, tzinfo=UTC)
    daily_at_six = parse_every("0 6 * * *")
    assert daily_at_six.period_start(moment.replace(hour=5)) == datetime(2024, 1, 14, 6, tzinfo=UTC)
    assert daily_at_six.next_boundary(datetime(2024, 1, 14, 6, tzinfo=UTC)) == datetime(2024, 1, 15, 6, tzinfo=UTC)
    for bad in ("0h", "weekly", "1w"):
        with pytest.raises(InvalidScheduleError, match="--every"):
            parse_every(bad)


def hourly_service(log_dir: Path, out: Path, clock: Callable[[], datetime]) -> ReportService:
    """A fresh service (as after a restart) writing hourly PDF reports."""
    return ReportService(log_dir=str(log_dir), output_dir=out, schedule=parse_every("1h"), every="1h", clock=clock)


def log_more(log_dir: Path, clock: EventClock) -> None:
    """A late event for 10:50 (an hour already reported) and new events at 12:10 (two) and 13:20 (one)."""
    for moment, count in ((T0 + timedelta(minutes=50), 1), (T0 + timedelta(hours=2, minutes=10), 2),
                          (T0 + timedelta(hours=3, minutes=20), 1)):
        clock.at(moment)
        trail = AuditTrail(operation_name="late_batch", log_dir=log_dir)
        for _ in range(count):
            trail.log_model_inference("m1", "x", "y", 0.5)
        trail.close(status="completed")


def test_one_report_per_period_across_restarts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Completed hours get one report each; a restart adds the new hours and never rewrites an old one."""
    clock = EventClock(monkeypatch)
    log_dir, out = tmp_path / "audit_logs", tmp_path / "reports"
    record_sample(log_dir, clock)
    now = [T0 + timedelta(hours=2, minutes=30)]
    first = hourly_service(log_dir, out, lambda: now[0]).run_once()
    assert [p.name for p in first] == ["audit_report_20240115T1000Z_20240115T1100Z.pdf",
                                       "audit_report_20240115T1100Z_20240115T1200Z.pdf"]
    written = {p.name: p.read_bytes() for p in first}
    assert fact(pdf_text(first[0]), "Total events") == 24 and fact(pdf_text(first[1]), "Total events") == 0

    log_more(log_dir, clock)
    now[0] = T0 + timedelta(hours=4, minutes=30)
    second = hourly_service(log_dir, out, lambda: now[0]).run_once()
    assert [p.name for p in second] == ["audit_report_20240115T1200Z_20240115T1300Z.pdf",
                                        "audit_report_20240115T1300Z_20240115T1400Z.pdf"]
    assert {name: (out / name).read_bytes() for name in written} == written  # the late event rewrote nothing
    in_noon_hour = connect(log_dir).execute(
        "SELECT count(*) FROM events WHERE timestamp >= '2024-01-15 12:00+00' AND timestamp < '2024-01-15 13:00+00'"
    ).fetchone()
    assert in_noon_hour is not None and fact(pdf_text(second[0]), "Total events") == in_noon_hour[0] == 4
    assert hourly_service(log_dir, out, lambda: now[0]).run_once() == []
    assert len(list(out.glob("*.pdf"))) == 4 and not list(out.glob("*.tmp"))


def test_lost_state_never_rewrites_a_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without its state file (a crash before it was saved) the service skips periods whose file exists."""
    log_dir, out = tmp_path / "audit_logs", tmp_path / "reports"
    record_sample(log_dir, EventClock(monkeypatch))
    clock = lambda: T0 + timedelta(hours=3)  # noqa: E731 - a fixed clock
    written = {p: p.read_bytes() for p in hourly_service(log_dir, out, clock).run_once()}
    (out / STATE_FILE).unlink()
    assert hourly_service(log_dir, out, clock).run_once() == []
    assert {p: p.read_bytes() for p in written} == written


def test_service_guards_its_output_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second service on the same directory and an unreadable state file stop with a clear error."""
    log_dir, out = tmp_path / "audit_logs", tmp_path / "reports"
    record_sample(log_dir, EventClock(monkeypatch))
    service = hourly_service(log_dir, out, lambda: T0 + timedelta(hours=3))
    out.mkdir()
    with open(out / LOCK_FILE, "a+b") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(ReportServiceBusyError, match="Another report service"):
            service.run_once()
    (out / STATE_FILE).write_text("{not json")
    with pytest.raises(ReportStateError, match="delete it"):
        service.run_once()


def test_no_events_no_reports(tmp_path: Path) -> None:
    """An empty lake yields no report and no error."""
    log_dir = tmp_path / "audit_logs"
    AuditTrail(operation_name="never_logged", log_dir=log_dir).flush()
    assert hourly_service(log_dir, tmp_path / "reports", lambda: T0).run_once() == []


def cli(*argv: str) -> int:
    """Run `secureml-audit report` with argv through the subcommand's own parser."""
    parser = argparse.ArgumentParser(prog="secureml-audit report")
    configure_parser(parser)
    return run(parser.parse_args(list(argv)))


def test_cli_once_twice_adds_only_new_periods(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`report --every 1h --once` run twice, with events logged between, adds the new hours and keeps the old."""
    clock = EventClock(monkeypatch)
    log_dir, out = tmp_path / "audit_logs", tmp_path / "reports"
    record_sample(log_dir, clock)
    now = [T0 + timedelta(hours=2, minutes=30)]
    monkeypatch.setattr("secureml.reporting.service.utc_now", lambda: now[0])
    args = ("--log-dir", str(log_dir), "--output-dir", str(out), "--every", "1h", "--once", "--quiet")
    assert cli(*args) == 0
    first = capsys.readouterr().out.split()
    assert len(first) == 2
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.pdf")}
    log_more(log_dir, clock)
    now[0] = T0 + timedelta(hours=4, minutes=30)
    assert cli(*args) == 0
    second = capsys.readouterr().out.split()
    assert len(second) == 2 and not set(first) & set(second)
    assert {name: (out / name).stat().st_mtime_ns for name in before} == before
    assert sorted(p.name for p in out.glob("*.pdf")) == sorted(Path(p).name for p in first + second)


def test_cli_cron_schedule_writes_html(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cron --every makes periods between its fire times; --format html writes HTML reports."""
    log_dir, out = tmp_path / "audit_logs", tmp_path / "reports"
    record_sample(log_dir, EventClock(monkeypatch))
    monkeypatch.setattr("secureml.reporting.service.utc_now", lambda: T0 + timedelta(hours=9))
    assert cli("--log-dir", str(log_dir), "--output-dir", str(out), "--every", "0 */6 * * *", "--once",
               "--format", "html", "--no-charts", "--quiet") == 0
    assert sorted(p.name for p in out.glob("*.html")) == ["audit_report_20240115T0600Z_20240115T1200Z.html",
                                                         "audit_report_20240115T1200Z_20240115T1800Z.html"]


def test_cli_on_demand_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    """`report --output FILE` with filters writes one report and prints its path."""
    log_dir = tmp_path / "audit_logs"
    record_sample(log_dir, EventClock(monkeypatch))
    target = tmp_path / "one.pdf"
    assert cli("--log-dir", str(log_dir), "--output", str(target), "--start", "2024-01-15T10:00:00",
               "--end", "2024-01-15T10:30:00", "--event-type", "data_access", "--event-type", "error") == 0
    assert capsys.readouterr().out.strip() == str(target)
    assert fact(pdf_text(target), "Total events") == 4


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (("--output-dir", "o"), 2, "needs --every"),
        (("--output", "r.pdf", "--every", "1h"), 2, "use --output-dir"),
        (("--output-dir", "o", "--every", "1h", "--start", "2024-01-01"), 2, "--start/--end"),
        (("--output", "r.docx"), 2, "Unknown report format"),
        (("--output-dir", "o", "--every", "fortnightly"), 2, "neither an interval"),
        (("--output", "r.pdf", "--logo", "missing.png"), 2, "logo_path=None"),
    ],
)
def test_cli_errors_are_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], status: int,
                                  message: str) -> None:
    """Wrong combinations and bad values exit 2, each with one line on stderr saying what to do."""
    monkeypatch.chdir(tmp_path)
    assert cli("--log-dir", str(tmp_path / "audit_logs"), *argv) == status
    assert message in capsys.readouterr().err
