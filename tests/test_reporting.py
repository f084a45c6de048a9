"""Audit reports: the guide's example, PDF content that matches the lake, logo, charts, privacy, errors."""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path
from typing import Any

import duckdb
import pytest
from PIL import Image
from pypdf import PdfReader
from support.reporting import (
    SECRET_ARGUMENT,
    SECRET_OUTPUT,
    SUBJECT,
    EventClock,
    fact,
    make_logo,
    pdf_text,
    record_sample,
)

from guide import CREATE_AND_LOG, GET_LOGS, REPORT
from secureml.audit import connect, get_audit_logs
from secureml.reporting import (
    InvalidFiltersError,
    InvalidReportInputError,
    LakeUnavailableError,
    LogoError,
    LogoNotFoundError,
    OutputNotWritableError,
    ReportGenerator,
    ReportingError,
    UnsupportedFormatError,
)
from secureml.reporting.audit_compliance import alerts_section
from secureml.reporting.document import Table
from secureml.reporting.source import scope_from_connection

CHART_TITLES = ("Events over time", "Events by type", "Events by user", "Compliance checks by regulation",
                "Most accessed datasets", "Data-subject requests by status")


@pytest.fixture
def sample_lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A lake holding record_sample's events."""
    log_dir = tmp_path / "audit_logs"
    record_sample(log_dir, EventClock(monkeypatch))
    return log_dir


def lake_count(log_dir: Path, where: str = "TRUE") -> int:
    """count(*) over the lake's events view."""
    row = connect(log_dir).execute(f"SELECT count(*) FROM events WHERE {where}").fetchone()
    assert row is not None
    return int(row[0])


def test_guide_example_runs_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The guide's reporting example writes a PDF, both from its own (empty) query and from real logs."""
    monkeypatch.chdir(tmp_path)
    make_logo(tmp_path / "company_logo.png")
    scope: dict[str, Any] = {}
    exec(CREATE_AND_LOG, scope)
    exec(GET_LOGS, scope)
    exec(REPORT, scope)
    assert scope["logs"] == [] and Path(scope["report_path"]).is_file()
    scope["logs"] = get_audit_logs(operation_name="credit_risk_model_training", log_dir="audit_logs")
    exec(REPORT, scope)
    assert scope["report_path"] == str(tmp_path / "audit_report.pdf")
    text = pdf_text(tmp_path / "audit_report.pdf")
    assert "Credit Risk Model Audit Report" in text
    assert fact(text, "Total events") == len(scope["logs"]) == 8


@pytest.mark.parametrize("source", ["filters", "list"])
def test_pdf_counts_equal_the_lake(sample_lake: Path, tmp_path: Path, source: str) -> None:
    """Title and every summary figure in the PDF equal what SQL over the lake says, from filters or a list."""
    logs: object = {"log_dir": str(sample_lake)} if source == "filters" else get_audit_logs(log_dir=sample_lake)
    path = ReportGenerator().generate_audit_report(logs, tmp_path / "r.pdf", title="Quarterly Audit")
    text = pdf_text(Path(path))
    assert text.startswith("Quarterly Audit")
    expected = {
        "Total events": lake_count(sample_lake),
        "Operations": 2,
        "Data accesses": lake_count(sample_lake, "event_type = 'data_access'"),
        "Records accessed": 6250,
        "Accesses without a declared purpose": 1,
        "Model inferences": lake_count(sample_lake, "event_type = 'model_inference'"),
        "Compliance checks passed": lake_count(sample_lake, "event_type = 'compliance_check' AND result"),
        "Compliance checks failed": lake_count(sample_lake, "event_type = 'compliance_check' AND NOT result"),
        "Errors": lake_count(sample_lake, "event_type = 'error'"),
        "Audited function calls": 1,
    }
    assert {label: fact(text, label) for label in expected} == expected
    assert expected["Total events"] == 24


def test_every_page_is_numbered_and_identified(sample_lake: Path, tmp_path: Path) -> None:
    """Each page carries 'Page n of N' and the report id; the PDF has a title, a language and an outline."""
    ReportGenerator().generate_audit_report({"log_dir": str(sample_lake)}, tmp_path / "r.pdf", "Navigable")
    reader = PdfReader(tmp_path / "r.pdf")
    report_id = re.search(r"Report id\s+(R-[0-9A-F]{12})", reader.pages[0].extract_text())
    assert report_id is not None
    total = len(reader.pages)
    for number, page in enumerate(reader.pages, start=1):
        text = page.extract_text()
        assert f"Page {number} of {total}" in text and report_id.group(1) in text
    assert reader.metadata is not None and reader.metadata.title == "Navigable"
    assert reader.trailer["/Root"]["/Lang"] == "en"
    assert [entry.title for entry in reader.outline][:3] == ["Summary", "Integrity", "Activity"]


def test_filters_select_in_duckdb(sample_lake: Path, tmp_path: Path) -> None:
    """Filters given as a dict (operation, time range, type) narrow the report like get_audit_logs does."""
    filters = {"log_dir": str(sample_lake), "operation_name": "credit_risk_model_training",
               "start_time": "2024-01-15T10:00:00", "end_time": "2024-01-15T10:11:00", "event_type": "model_inference"}
    ReportGenerator().generate_audit_report(filters, tmp_path / "r.pdf", title="Inferences")
    text = pdf_text(tmp_path / "r.pdf")
    query = {k: v for k, v in filters.items() if k != "log_dir"}
    assert fact(text, "Total events") == len(get_audit_logs(log_dir=sample_lake, **query)) == 5
    assert "operation_name" in text and "2024-01-15T10:11:00+00:00" in text  # the appendix lists the filters


def test_logo_is_embedded(sample_lake: Path, tmp_path: Path) -> None:
    """The logo is drawn on the cover as an image of the logo's own pixel size."""
    logo = make_logo(tmp_path / "logo.png", (240, 80))
    ReportGenerator().generate_audit_report({"log_dir": str(sample_lake)}, tmp_path / "r.pdf", "T", logo_path=logo)
    images = PdfReader(tmp_path / "r.pdf").pages[0].images
    assert len(images) == 1
    assert images[0].image.size == (240, 80)


def test_charts_are_drawn_and_can_be_left_out(sample_lake: Path, tmp_path: Path) -> None:
    """With charts the PDF holds each chart's title and axis labels; include_charts=False leaves them all out."""
    generator = ReportGenerator()
    generator.generate_audit_report({"log_dir": str(sample_lake)}, tmp_path / "with.pdf", "T", include_charts=True)
    generator.generate_audit_report({"log_dir": str(sample_lake)}, tmp_path / "without.pdf", "T", include_charts=False)
    with_charts, without = pdf_text(tmp_path / "with.pdf"), pdf_text(tmp_path / "without.pdf")
    for title in CHART_TITLES:
        assert title in with_charts
        assert title not in without
    assert "overdue" in with_charts.split("Data-subject requests by status")[1].split("Deadlines")[0]  # bar label
    assert len(PdfReader(tmp_path / "without.pdf").pages) < len(PdfReader(tmp_path / "with.pdf").pages)
    assert fact(without, "Total events") == fact(with_charts, "Total events")


def test_report_shows_deadlines_and_hides_personal_data(sample_lake: Path, tmp_path: Path) -> None:
    """Requests get GDPR deadlines and states; subjects are masked; argument values and model outputs never appear."""
    ReportGenerator().generate_audit_report({"log_dir": str(sample_lake)}, tmp_path / "r.pdf", "T")
    text = pdf_text(tmp_path / "r.pdf")
    assert "us***45" in text and "su***65" in text
    assert SUBJECT not in text and "subject_98765" not in text
    assert SECRET_ARGUMENT not in text and SECRET_OUTPUT not in text
    secrets = f"contains(arguments, '{SECRET_ARGUMENT}') OR contains(output, '{SECRET_OUTPUT}')"
    in_lake = lake_count(sample_lake, secrets)
    assert in_lake == 6  # the values are in the lake, so their absence from the report means something
    assert "2024-01-02 2024-02-02" in text.replace("\n", " ")  # received + one calendar month (GDPR Art. 12(3))
    assert "overdue" in text and "completed" in text


def test_long_values_are_truncated_and_wrapped(tmp_path: Path) -> None:
    """Values far wider than a page are cut with an ellipsis and wrapped inside their cell."""
    long_word = "x" * 600
    logs = [
        {"event_type": "error", "timestamp": "2024-01-01T00:00:00+00:00", "operation_id": "a" * 36,
         "operation_name": "op " * 100, "error_type": "E" * 300, "message": long_word, "regulations": []},
        {"event_type": "data_access", "timestamp": "2024-01-01T00:00:01+00:00", "operation_id": "b",
         "operation_name": "n", "dataset_name": long_word, "num_records": 1, "purpose": "p", "regulations": []},
    ]
    ReportGenerator().generate_audit_report(logs, tmp_path / "r.pdf", "Long values")
    text = pdf_text(tmp_path / "r.pdf")
    assert "…" in text and long_word not in text.replace("\n", "")
    assert len(PdfReader(tmp_path / "r.pdf").pages) < 15


def test_empty_scope_still_reports(sample_lake: Path, tmp_path: Path) -> None:
    """A selection without events gives a complete report that says so."""
    ReportGenerator().generate_audit_report({"log_dir": str(sample_lake), "user": "nobody"}, tmp_path / "r.pdf", "T")
    text = pdf_text(tmp_path / "r.pdf")
    assert fact(text, "Total events") == 0 and "No events in scope." in text


def test_duckdb_connection_is_a_source(sample_lake: Path, tmp_path: Path) -> None:
    """A DuckDB connection with an events view is reported as is and left as it was found."""
    parquet = tmp_path / "events.parquet"
    connect(sample_lake).execute(f"COPY (SELECT * FROM events) TO '{parquet}' (FORMAT parquet)")
    connection = duckdb.connect()
    connection.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet('{parquet}')")
    ReportGenerator().generate_audit_report(connection, tmp_path / "r.pdf", "T")
    assert fact(pdf_text(tmp_path / "r.pdf"), "Total events") == lake_count(sample_lake)
    assert connection.execute("SELECT table_name FROM information_schema.tables").fetchall() == [("events",)]
    with pytest.raises(InvalidReportInputError, match="needs a view or table named 'events'"):
        ReportGenerator().generate_audit_report(duckdb.connect(), tmp_path / "r.pdf", "T")


class FakeVerification:
    """Stands for the result of secureml.integrity.verify(log_dir)."""

    def __init__(self, ok: bool, signed: bool = True) -> None:
        """A verdict with a fixed summary."""
        self.ok = ok
        self.signed = signed
        self.checkpoints: list[object] = []

    def summary(self) -> dict[str, object]:
        """What the verifier checked."""
        return {"events_checked": 24, "broken_chains": 0 if self.ok else 1}


@pytest.mark.parametrize(("ok", "signed", "verdict", "cover"), [
    (True, True, "Verified", "verified"), (False, True, "FAILED", "FAILED"),
    (True, False, "Not signed", "intact, not signed"),
])
def test_integrity_comes_from_the_verifier(sample_lake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           ok: bool, signed: bool, verdict: str, cover: str) -> None:
    """The verifier's verdict and summary are printed; its failure is never hidden, nor a missing signature."""
    monkeypatch.setattr("secureml.reporting.integrity.verify",
                        lambda log_dir, public_key=None: FakeVerification(ok, signed))
    ReportGenerator().generate_audit_report({"log_dir": str(sample_lake)}, tmp_path / "r.pdf", "T")
    text = pdf_text(tmp_path / "r.pdf")
    assert f"Integrity\n{verdict}" in text and fact(text, "Events checked") == 24
    assert f"Integrity\n{cover}" in text  # the cover


def test_integrity_without_verifier_says_so(sample_lake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A verifier that raises: the report says 'not verified' and why."""
    generator = ReportGenerator()

    def broken(log_dir: str, public_key: Path | None = None) -> FakeVerification:
        """A verifier that fails."""
        raise RuntimeError("checkpoint key missing")

    monkeypatch.setattr("secureml.reporting.integrity.verify", broken)
    generator.generate_audit_report({"log_dir": str(sample_lake)}, tmp_path / "b.pdf", "T")
    assert "could not run: RuntimeError: checkpoint key missing" in pdf_text(tmp_path / "b.pdf")


def test_a_report_from_a_list_of_logs_verifies_those_events(sample_lake: Path, tmp_path: Path) -> None:
    """Events passed in memory are checked against their own hashes and chains; one altered value fails it."""
    generator = ReportGenerator()
    logs = get_audit_logs(log_dir=sample_lake)
    generator.generate_audit_report(logs, tmp_path / "c.pdf", "T")
    text = " ".join(pdf_text(tmp_path / "c.pdf").split())
    assert f"Verified: each of the {len(logs)} events passed to the report matches its recorded hash" in text
    assert "Integrity verified" in text and "list of" not in text
    assert "only the lake's verifier can tell" in text  # honest: removals from the lake are not covered
    subset = [log for log in logs if log["event_type"] != "model_inference"]
    generator.generate_audit_report(subset, tmp_path / "d.pdf", "T")
    assert "only partly in the list" in " ".join(pdf_text(tmp_path / "d.pdf").split())
    altered = [copy.copy(log) for log in logs]  # a copy keeps what the values were sealed as
    altered[1]["user"] = "mallory"
    generator.generate_audit_report(altered, tmp_path / "e.pdf", "T")
    text = " ".join(pdf_text(tmp_path / "e.pdf").split())
    assert "FAILED: 1 of the" in text and "Integrity FAILED" in text


ALERTS = (
    "CREATE TABLE alerts AS SELECT * FROM (VALUES "
    "(1705313400000000, 'high', 'dsr_deadline', 'GDPR', 'user_12345', 'Request past its deadline'),"
    "(1705312800000000, 'medium', 'no_purpose', 'GDPR', NULL, 'Data access without purpose'),"
    "(1701388800000000, 'low', 'old', 'CCPA', NULL, 'Before the period')"
    ") AS t(event_time, severity, rule_id, regulation, user_id, message)"
)


def test_alerts_table_is_shown_when_present(sample_lake: Path, tmp_path: Path) -> None:
    """Alerts come from an `alerts` table beside the events: newest first, subjects masked; none: 'no alert data'."""
    connection = connect(sample_lake)
    connection.execute(ALERTS)
    ReportGenerator().generate_audit_report(connection, tmp_path / "r.pdf", "T")
    alerts = pdf_text(tmp_path / "r.pdf").split("\nAlerts\n")[1]
    assert alerts.index("2024-01-15 10:10:00") < alerts.index("Request past its deadline")
    assert alerts.index("Request past its deadline") < alerts.index("Data access without purpose")
    assert "Before the period" in alerts and "us***45" in alerts and SUBJECT not in alerts
    connection.execute("DROP TABLE alerts")
    ReportGenerator().generate_audit_report(connection, tmp_path / "r.pdf", "T")
    assert "No alert data" in pdf_text(tmp_path / "r.pdf")


def test_alerts_follow_the_report_period(sample_lake: Path) -> None:
    """Only alerts whose time falls in the report's period are listed (times stored as UTC micros)."""
    connection = connect(sample_lake)
    connection.execute(ALERTS)
    scope = scope_from_connection(connection, {"start_time": "2024-01-15T00:00:00", "end_time": "2024-01-16T00:00:00"})
    table = alerts_section(connection, scope.start, scope.end).blocks[0]
    assert isinstance(table, Table) and table.total_rows == 2
    assert [row[-1] for row in table.rows] == ["Request past its deadline", "Data access without purpose"]


def test_progress_goes_to_stderr(sample_lake: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """progress=True prints one line per step on stderr and nothing on stdout."""
    ReportGenerator(progress=True).generate_audit_report({"log_dir": str(sample_lake)}, tmp_path / "r.pdf", "T")
    out, err = capsys.readouterr()
    assert out == ""
    assert "[report] read 24 events" in err and "[report] wrote" in err


def test_errors_name_the_problem_and_the_fix(sample_lake: Path, tmp_path: Path) -> None:
    """Missing logo, unreadable logo, unknown format, unwritable path and bad input raise their own errors."""
    generator = ReportGenerator()
    logs = {"log_dir": str(sample_lake)}
    with pytest.raises(LogoNotFoundError, match="missing.png.*logo_path=None"):
        generator.generate_audit_report(logs, tmp_path / "r.pdf", "T", logo_path=tmp_path / "missing.png")
    (tmp_path / "not_an_image.png").write_text("hello")
    with pytest.raises(LogoError, match="not a readable image"):
        generator.generate_audit_report(logs, tmp_path / "r.pdf", "T", logo_path=tmp_path / "not_an_image.png")
    with pytest.raises(UnsupportedFormatError, match=r"'\.docx'.*\.pdf.*\.html"):
        generator.generate_audit_report(logs, tmp_path / "r.docx", "T")
    with pytest.raises(OutputNotWritableError, match="does not exist.*Create the directory"):
        generator.generate_audit_report(logs, tmp_path / "no" / "such" / "r.pdf", "T")
    with pytest.raises(InvalidFiltersError, match="Unknown filter.*operation"):
        generator.generate_audit_report({**logs, "operation": "x"}, tmp_path / "r.pdf", "T")
    with pytest.raises(InvalidFiltersError, match="ISO 8601"):
        generator.generate_audit_report({**logs, "start_time": "yesterday"}, tmp_path / "r.pdf", "T")
    with pytest.raises(InvalidReportInputError, match="get_audit_logs"):
        generator.generate_audit_report("audit_logs", tmp_path / "r.pdf", "T")
    with pytest.raises(LakeUnavailableError, match="does not exist.*AuditTrail"):
        generator.generate_audit_report({"log_dir": str(tmp_path / "typo")}, tmp_path / "r.pdf", "T")
    assert issubclass(LogoNotFoundError, ReportingError) and issubclass(OutputNotWritableError, ReportingError)
    assert not list(tmp_path.glob("*.pdf"))


def test_read_only_directory_is_reported(sample_lake: Path, tmp_path: Path) -> None:
    """A directory nobody may create files in (not even root: /proc/self) gives OutputNotWritableError."""
    locked = Path("/proc/self")
    with pytest.raises(OutputNotWritableError, match="r.pdf"):
        ReportGenerator().generate_audit_report({"log_dir": str(sample_lake)}, locked / "r.pdf", "T")
    assert not list(tmp_path.glob("*.pdf"))


def test_report_replaces_the_file_atomically(sample_lake: Path, tmp_path: Path) -> None:
    """An existing report is replaced in one rename and no temporary file is left behind."""
    target = tmp_path / "r.pdf"
    target.write_text("old")
    ReportGenerator().generate_audit_report({"log_dir": str(sample_lake)}, target, "T")
    assert target.read_bytes().startswith(b"%PDF") and [p.name for p in tmp_path.iterdir() if p.is_file()] == ["r.pdf"]


def test_pages_render_to_png(sample_lake: Path, tmp_path: Path) -> None:
    """pdftoppm renders the cover and a chart page to non-blank A4 images (the pages looked at by hand)."""
    logo = make_logo(tmp_path / "logo.png")
    pdf = tmp_path / "r.pdf"
    ReportGenerator().generate_audit_report({"log_dir": str(sample_lake)}, pdf, "Rendered", logo_path=logo)
    try:
        subprocess.run(["pdftoppm", "-r", "50", "-png", "-f", "1", "-l", "3", str(pdf), str(tmp_path / "page")],
                       check=True)
    except FileNotFoundError:
        raise pytest.fail.Exception(
            "pdftoppm is not installed; this test renders report pages with it. Install poppler-utils "
            "(Debian/Ubuntu: apt-get install poppler-utils; macOS: brew install poppler).", pytrace=False
        ) from None
    pages = sorted(tmp_path.glob("page-*.png"))
    assert len(pages) == 3
    for page in pages:
        image = Image.open(page).convert("L")
        assert image.size[0] in (413, 414) and image.size[1] == 585  # A4 at 50 dpi
        low, high = image.getextrema()
        assert low < 100 and high == 255  # dark ink on white paper


LONG_NAME = "customer_financial_data_anonymized_for_the_quarterly_credit_risk_review.v2"


def test_identifiers_break_only_at_separators_and_never_get_a_hyphen(tmp_path: Path) -> None:
    """A long dataset name, operation name and path: no hyphen inserted, and the name reads back whole."""
    from secureml.audit import AuditTrail

    log_dir = tmp_path / "audit_logs"
    with AuditTrail("quarterly_credit_risk_model_training_with_anonymized_customer_data", log_dir=log_dir,
                    user="analyst_with_a_rather_long_identifier_123") as trail:
        trail.log_data_access(LONG_NAME, ["income"], 5000, "model_training")
        trail.log_data_transformation("anonymization", "raw_customer_financial_data_export.parquet", LONG_NAME, {})
    ReportGenerator().generate_audit_report({"log_dir": str(log_dir)}, tmp_path / "r.pdf", "T")
    text = pdf_text(tmp_path / "r.pdf")
    assert not re.search(r"[_./]-\n", text) and "_-" not in text and ".-" not in text, "a hyphen was inserted"
    rejoined = re.sub(r"([_./])\n", r"\1", text)  # what a reader gets by joining the broken lines
    assert LONG_NAME in rejoined and "quarterly_credit_risk_model_training_with_anonymized_customer_data" in rejoined


def test_timeline_lists_each_operation_in_seq_order(tmp_path: Path) -> None:
    """Interleaved operations: each one's rows in seq order, its audit_closed last, runs of one type as one row."""
    from secureml.audit import AuditTrail
    from secureml.reporting.audit_timeline import timeline_section
    from secureml.reporting.source import open_scope

    log_dir = tmp_path / "audit_logs"
    first = AuditTrail("scoring", log_dir=log_dir)
    second = AuditTrail("training", log_dir=log_dir)
    for i in range(300):
        first.log_model_inference("m", f"i{i}", i, 0.5)
        if i == 150:
            second.log_data_access("d", ["a"], 10, "p")
            first.log_compliance_check("purpose", "GDPR", True, {})
    second.close()
    first.close()
    scope = open_scope({"log_dir": str(log_dir)})
    try:
        table = next(b for b in timeline_section(scope.connection, scope.event_count).blocks if isinstance(b, Table))
    finally:
        scope.close()
    rows = [(r[1], r[2], r[3]) for r in table.rows]  # operation (first row only), seq(s), event type
    assert rows == [
        ("scoring", "0", "audit_started"), ("", "1–151", "model_inference"), ("", "152", "compliance_check"),
        ("", "153–301", "model_inference"), ("", "302", "audit_closed"),
        ("training", "0", "audit_started"), ("", "1", "data_access"), ("", "2", "audit_closed"),
    ]
    assert table.rows[1][5].startswith("151 events: 1 model(s)")


def test_a_lake_report_spills_only_under_log_dir_and_cleans_up(sample_lake: Path, tmp_path: Path) -> None:
    """A lake report's bounded connection spills to an owner-only work directory in log_dir, gone after."""
    import gc
    import stat

    from secureml.reporting import source

    before = sorted(p.name for p in sample_lake.iterdir())
    connection = source.connect_lake(str(sample_lake))
    spill = next(sample_lake.glob(".report-*"))
    assert stat.S_IMODE(spill.stat().st_mode) == 0o700
    assert connection.execute("SELECT current_setting('temp_directory')").fetchone() == (str(spill),)
    connection.close()
    del connection
    gc.collect()
    path = ReportGenerator().generate_audit_report({"log_dir": str(sample_lake)}, tmp_path / "r.pdf")
    assert fact(pdf_text(Path(path)), "Total events") == lake_count(sample_lake)
    gc.collect()
    assert sorted(p.name for p in sample_lake.iterdir()) == before
