"""HTML reports: one self-contained file with interactive Plotly charts and nothing loaded from the network."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support.reporting import SECRET_ARGUMENT, SECRET_OUTPUT, SUBJECT, EventClock, make_logo, record_sample

from secureml.reporting import ReportGenerator

# Anything that makes a browser fetch: src/href/action/poster attributes, CSS url() and @import.
REMOTE = re.compile(
    r"""(?:\b(?:src|href|action|poster|data)\s*=\s*["']?\s*(?:https?:)?//)|(?:url\(\s*["']?\s*(?:https?:)?//)"""
    r"""|(?:@import)""",
    re.IGNORECASE,
)


@pytest.fixture
def html_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The HTML audit report of record_sample's events, with a logo."""
    log_dir = tmp_path / "audit_logs"
    record_sample(log_dir, EventClock(monkeypatch))
    logo = make_logo(tmp_path / "l.png")
    path = ReportGenerator().generate_audit_report(
        {"log_dir": str(log_dir)}, tmp_path / "report.html", "Credit <Risk> Audit", logo_path=logo
    )
    return Path(path).read_text(encoding="utf-8")


def scripts(html: str) -> list[str]:
    """The bodies of every <script> element."""
    return re.findall(r"<script[^>]*>(.*?)</script>", html, re.DOTALL)


def test_html_holds_interactive_plotly_charts(html_report: str) -> None:
    """plotly.js is inlined once and each chart is a Plotly figure with its title."""
    assert html_report.count("Plotly.newPlot(") == 6
    assert [len(s) > 3_000_000 for s in scripts(html_report)].count(True) == 1  # the plotly.js bundle
    for title in ("Events over time", "Events by type", "Events by user", "Compliance checks by regulation",
                  "Most accessed datasets", "Data-subject requests by status"):
        assert f'"text":"{title}' in html_report


def test_html_loads_nothing_from_the_network(html_report: str) -> None:
    """No script, stylesheet, image or font is fetched: the logo is a data: URI, plotly.js is inline."""
    # The bundle itself only names URLs for features bar charts never use (map tiles, its logo link).
    bundle = max(scripts(html_report), key=len)
    assert not REMOTE.search(html_report.replace(bundle, ""))
    assert not re.search(r"<script[^>]*\bsrc\s*=", html_report, re.IGNORECASE) and "<link" not in html_report
    assert 'src="data:image/png;base64,' in html_report


def test_html_escapes_and_hides_personal_data(html_report: str) -> None:
    """Text is escaped; subjects are masked; argument values and model outputs are absent."""
    assert "<title>Credit &lt;Risk&gt; Audit</title>" in html_report
    assert "us***45" in html_report and SUBJECT not in html_report
    assert SECRET_ARGUMENT not in html_report and SECRET_OUTPUT not in html_report


def test_html_without_charts_has_no_plotly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """include_charts=False writes a small HTML file with the tables and no plotly.js."""
    log_dir = tmp_path / "audit_logs"
    record_sample(log_dir, EventClock(monkeypatch))
    path = ReportGenerator().generate_audit_report({"log_dir": str(log_dir)}, tmp_path / "r.html", "T",
                                                   include_charts=False)
    html = Path(path).read_text(encoding="utf-8")
    assert "Plotly" not in html and len(html) < 200_000
    assert "<caption>Failed compliance checks</caption>" in html and "Timeline" in html
