"""The audit explorer over real HTTP: pages, paging, filters, escaping, auth, read-only methods, downloads."""

from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from support.ports import free_port_pair
from support.ui import (  # noqa: F401 (the *_fixture imports are the module's fixtures)
    HOSTILE_NAME,
    OPERATIONS,
    Served,
    Trail,
    fetch,
    serve,
    served_fixture,
    trail_fixture,
    trail_keystore_fixture,
)

from conftest import REPO, run_cli
from secureml.audit import AuditTrail
from secureml.integrity import prove, verify_proof
from secureml.integrity.keys import load_public_key, public_key_path
from secureml.ui.security import CSP, Access


def rows_of(html: str, table: str) -> list[str]:
    """The <tr> elements of one table's body."""
    body = html.split(f'id="{table}"', 1)[1].split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return [r for r in re.findall(r"<tr[^>]*>.*?</tr>", body, re.S) if 'class="empty"' not in r]


def test_every_page_renders_with_strict_headers(served: Served, trail: Trail) -> None:
    """Each page answers 200 with the strict CSP, no-sniff, no framing and no caching; assets are local."""
    op = trail.inference_operation
    for path in ("/operations", f"/operations/{op}", "/alerts", "/requests", "/integrity", "/charts", "/reports",
                 "/charts/data.json", "/static/htmx.min.js", "/static/plotly.min.js", "/static/app.css"):
        reply = fetch(served.url + path)
        assert reply.status == 200, (path, reply.text[:300])
        assert reply.headers["content-security-policy"] == CSP, path
        assert reply.headers["x-content-type-options"] == "nosniff"
        assert reply.headers["x-frame-options"] == "DENY" and reply.headers["cache-control"] == "no-store"
    page = fetch(served.url + "/charts").text
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources and all(s.startswith("/") for s in sources), sources  # nothing from another origin
    assert "<script>" not in page and " style=" not in page  # nothing inline the CSP would have to allow
    assert fetch(served.url + "/static/plotly.min.js").body.startswith(b"/**")


def test_methods_that_could_write_are_refused(served: Served) -> None:
    """POST, PUT, PATCH and DELETE get 405 (Allow: GET, HEAD) on pages, downloads, assets and unknown paths."""
    for path in ("/operations", "/proof?event_id=x", "/static/htmx.min.js", "/reports/audit-report.pdf", "/nowhere"):
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            reply = fetch(served.url + path, method=method, data=b"x=1")
            assert reply.status == 405, (method, path, reply.status)
            assert reply.headers["allow"] == "GET, HEAD" and "read-only" in reply.text
    assert fetch(served.url + "/operations", method="HEAD").status == 200


def test_a_token_is_required_when_set(trail: Trail) -> None:
    """With a token, no or a wrong credential is 401; a bearer header, or ?token= once (then a cookie), is let in."""
    with serve(trail.log_dir, Access(token="s3cret-token")) as running:
        assert fetch(running.url + "/operations").status == 401
        assert fetch(running.url + "/static/htmx.min.js").status == 401
        assert fetch(running.url + "/operations", headers={"Authorization": "Bearer wrong"}).status == 401
        assert fetch(running.url + "/operations?token=wrong").status == 401
        assert fetch(running.url + "/operations", headers={"Authorization": "Bearer s3cret-token"}).status == 200
        traded = fetch(running.url + "/operations?status=error&token=s3cret-token")
        assert traded.status == 303 and traded.headers["location"] == "/operations?status=error"
        cookie = traded.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        value = cookie.split(";", 1)[0]
        assert fetch(running.url + "/operations", headers={"Cookie": value}).status == 200


def test_basic_auth_when_configured(trail: Trail) -> None:
    """With basic auth, the right user and password are let in; a wrong password gets 401 with a Basic challenge."""
    def basic(user: str, password: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    with serve(trail.log_dir, Access(basic_user="auditor", basic_password="pa:ss")) as running:
        refused = fetch(running.url + "/alerts", headers=basic("auditor", "nope"))
        assert refused.status == 401 and refused.headers["www-authenticate"].startswith("Basic")
        assert fetch(running.url + "/alerts").status == 401
        assert fetch(running.url + "/alerts", headers=basic("auditor", "pa:ss")).status == 200


def test_attacker_controlled_values_are_shown_as_text(served: Served, trail: Trail) -> None:
    """A <script> in an operation name, user or dataset is escaped on every page that shows it."""
    listing = fetch(served.url + "/operations?user=%3Cb%3Emallory%3C%2Fb%3E").text
    timeline = fetch(served.url + f"/operations/{trail.operation_ids[HOSTILE_NAME]}").text
    for html in (listing, timeline):
        assert "<script>alert(" not in html and "<b>mallory</b>" not in html
        assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;op" in html
    assert "<img src=x" not in timeline and "&lt;img src=x onerror=alert(1)&gt;" in timeline
    assert "&lt;script&gt;steal()&lt;/script&gt;" in timeline


def test_operations_are_paged_newest_first(served: Served) -> None:
    """50 operations a page, newest start first, a next link while more follow, no operation twice."""
    first = fetch(served.url + "/operations").text
    second = fetch(served.url + "/operations?page=2").text
    one, two = rows_of(first, "operations"), rows_of(second, "operations")
    total = OPERATIONS + 4
    assert len(one) == 50 and len(two) == total - 50
    assert 'rel="next"' in first and 'rel="next"' not in second and 'rel="prev"' in second
    ids = [re.search(r'class="id">([^<]+)<', r).group(1) for r in one + two]  # type: ignore[union-attr]
    assert len(set(ids)) == total
    started = [re.search(r"<td>([^<]+UTC)</td>", r).group(1) for r in one + two]  # type: ignore[union-attr]
    assert started == sorted(started, reverse=True)


def test_operation_filters(served: Served) -> None:
    """Name, user (or data subject), regulation, status and time filters narrow the operations; they combine."""
    def count(query: str) -> int:
        reply = fetch(served.url + "/operations?" + query)
        assert reply.status == 200, reply.text[:300]
        return len(rows_of(reply.text, "operations"))

    assert count("name=batch_scoring_1") == 20
    assert count("status=error") == 6
    assert count("status=running") == 1
    assert count("regulation=CCPA") == 30
    assert count("user=user_1") == 15
    assert count("user=subject_4711") == 1  # the data subject of a request
    assert count("name=batch_scoring_1&regulation=CCPA&status=completed") == 10
    assert count("start=2999-01-01") == 0 and count("end=2000-01-01") == 0
    assert count("start=2000-01-01&end=2999-01-01&name=batch_scoring_0") == OPERATIONS // 3


def test_htmx_requests_get_only_the_part_they_replace(served: Served) -> None:
    """A filter sent by htmx (HX-Request, HX-Target) gets the results table alone, not the whole page."""
    reply = fetch(served.url + "/operations?name=dsr_handling",
                  headers={"HX-Request": "true", "HX-Target": "results"})
    assert reply.status == 200 and "<html" not in reply.text and "<form" not in reply.text
    assert len(rows_of(reply.text, "operations")) == 1


def test_bad_filters_are_a_400_naming_the_field(served: Served) -> None:
    """A bad time, status or page is a 400 page naming the field and the rule, not a traceback."""
    for query, field in (("start=noon", "start"), ("status=deleted", "status"), ("page=0", "page"),
                         ("start=2026-02-01&end=2026-01-01", "start")):
        reply = fetch(served.url + "/operations?" + query)
        assert reply.status == 400, query
        assert f"invalid &#39;{field}&#39;" in reply.text and "Traceback" not in reply.text


def test_timeline_in_seq_order_with_chain_status(served: Served, trail: Trail) -> None:
    """One operation's events come in seq order, 50 a page, each linked to the one before and matching its hash."""
    op = trail.inference_operation
    pages = [fetch(served.url + f"/operations/{op}?page={n}").text for n in (1, 2)]
    seqs = [int(s) for page in pages for s in re.findall(r'<span class="seq">#(\d+)</span>', page)]
    assert seqs == list(range(74))  # started, access, check, 70 inferences, closed
    assert all(re.findall(r'class="badge chain">([^<]+)<', page) == ["linked"] * n
               for page, n in zip(pages, (50, 24)))
    assert "purpose_limitation" in pages[0] and "credit_risk_classifier_v1" in pages[0]
    assert fetch(served.url + "/operations/no-such-operation").status == 404


def test_a_changed_event_shows_as_modified(trail: Trail, tmp_path: Path) -> None:
    """An event whose stored content no longer matches its hash is marked modified on the timeline."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    copy = tmp_path / "copy"
    shutil.copytree(trail.log_dir, copy)
    op = trail.operation_ids["dsr_handling"]
    for path in (copy / "lake" / "events").rglob("*.parquet"):
        table = pq.read_table(path)
        if op not in table.column("operation_id").to_pylist():
            continue
        names = table.column("operation_name").to_pylist()
        ids = table.column("operation_id").to_pylist()
        seqs = table.column("seq").to_pylist()
        changed = [("dsr_renamed" if (i == op and s == 1) else n) for n, i, s in zip(names, ids, seqs)]
        index = table.schema.get_field_index("operation_name")
        table = table.set_column(index, table.schema.field(index), pa.array(changed, table.schema.field(index).type))
        pq.write_table(table, path)
    with serve(copy) as running:
        html = fetch(running.url + f"/operations/{op}").text
    assert re.findall(r'class="badge chain">([^<]+)<', html) == ["linked", "modified", "linked"]


def test_proof_download_is_what_prove_writes_and_verifies(served: Served, trail: Trail) -> None:
    """/proof?event_id= downloads the inclusion proof `prove` makes; it checks out with the public key."""
    event_id = f"{trail.inference_operation}:5"
    reply = fetch(served.url + f"/proof?event_id={event_id}")
    assert reply.status == 200 and reply.headers["content-type"].startswith("application/json")
    assert reply.headers["content-disposition"].startswith("attachment;")
    proof = json.loads(reply.body)
    assert proof == prove(trail.log_dir, event_id)
    key = load_public_key(public_key_path(trail.log_dir.parent / "keys" / "signing_key.pem"))
    assert verify_proof(proof, key, event_id=event_id).sequence >= 0
    missing = fetch(served.url + "/proof?event_id=nope:1")
    assert missing.status == 404 and "no event 'nope:1'" in missing.text
    assert fetch(served.url + "/proof").status == 400


def test_requests_show_the_statutory_deadline(served: Served) -> None:
    """A GDPR request received 2020-01-10 and never completed is overdue since 2020-02-10 (one month)."""
    html = fetch(served.url + "/requests").text
    rows = rows_of(html, "requests")
    assert len(rows) == 1
    assert "2020-01-10 00:00:00 UTC" in rows[0] and "2020-02-10 00:00:00 UTC" in rows[0]
    assert "overdue" in rows[0] and "subject_4711" not in html  # subjects are masked, as in reports


def test_alerts_page_shows_the_alerters_record(served: Served) -> None:
    """The failed compliance check raised by the alerter is listed with its severity and rule."""
    rows = rows_of(fetch(served.url + "/alerts").text, "alerts")
    assert any("failed_compliance_check" in r and "purpose_limitation" in r for r in rows), rows


def test_integrity_runs_verify_in_the_background(trail: Trail) -> None:
    """The integrity page answers at once while verify runs, then shows the verdict and the checkpoints."""
    with serve(trail.log_dir) as running:
        started = time.perf_counter()
        first = fetch(running.url + "/integrity")
        assert time.perf_counter() - started < 5
        assert first.status == 200 and ('id="verify-running"' in first.text or 'id="verdict"' in first.text)
        deadline = time.monotonic() + 120
        html = first.text
        while 'id="verdict"' not in html and time.monotonic() < deadline:
            time.sleep(0.5)
            html = fetch(running.url + "/integrity", headers={"HX-Request": "true", "HX-Target": "verify"}).text
    assert "Verdict: <b>intact</b>" in html
    assert len(rows_of(first.text, "checkpoints")) >= 1


def test_integrity_without_background_verify(trail: Trail) -> None:
    """With verify off (--no-verify), the integrity page lists checkpoints and says how to verify instead."""
    with serve(trail.log_dir, verify=False) as running:
        html = fetch(running.url + "/integrity").text
    assert "--no-verify" in html and "secureml-audit verify" in html and 'id="verify-running"' not in html
    assert len(rows_of(html, "checkpoints")) >= 1


def test_events_logged_while_serving_show_on_the_next_load(tmp_path: Path) -> None:
    """An operation logged after the server started, not yet materialised, is listed on the next page load."""
    log_dir = tmp_path / "logs"
    with AuditTrail("before_start", log_dir=log_dir, bootstrap_servers="") as trail:
        trail.log_data_access("customers", ["email"], 1, "support")
    with serve(log_dir) as running:
        assert rows_of(fetch(running.url + "/operations").text, "operations")[0].count("before_start") == 1
        with AuditTrail("while_serving", log_dir=log_dir, bootstrap_servers="") as trail:
            trail.log_data_access("customers", ["email"], 2, "support")
            later = trail.operation_id
        names = re.findall(r'class="op"[^>]*>([^<]+)<', fetch(running.url + "/operations").text)
        assert names == ["while_serving", "before_start"]
        assert fetch(running.url + f"/operations/{later}").status == 200


def test_charts_data_counts_every_event(served: Served, trail: Trail) -> None:
    """The charts' data is Plotly figures whose per-day bars add up to every event of the trail."""
    figures = json.loads(fetch(served.url + "/charts/data.json").body)
    total = sum(sum(trace["y"]) for trace in figures["events"]["data"])
    from secureml.query import count_events

    assert total == count_events(trail.log_dir)
    assert {t["name"] for t in figures["checks"]["data"]} == {"passed", "failed"}
    assert "high" in figures["alerts"]["data"][0]["x"]  # the failed check's alert, by severity


def test_reports_download_and_leave_nothing_behind(served: Served, trail: Trail) -> None:
    """PDF and HTML reports download (filters applied) and their temporary files under log_dir are removed."""
    pdf = fetch(served.url + "/reports/audit-report.pdf?operation_name=credit_risk_model_training")
    assert pdf.status == 200 and pdf.body.startswith(b"%PDF") and pdf.headers["content-type"] == "application/pdf"
    html = fetch(served.url + "/reports/audit-report.html?start=2000-01-01")
    assert html.status == 200 and b"<html" in html.body[:500]
    assert fetch(served.url + "/reports/audit-report.html?start=noon").status == 400
    assert fetch(served.url + "/reports/audit-report.exe").status == 404
    time.sleep(0.5)
    assert not list(trail.log_dir.glob(".ui-report-*"))


def test_cli_refuses_a_public_address_without_a_credential(trail: Trail) -> None:
    """`ui --host 0.0.0.0` without a token or basic auth exits 2 with one line saying what to pass."""
    result = run_cli("ui", "--log-dir", str(trail.log_dir), "--host", "0.0.0.0", "--port", "1")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0 and "--token" in result.stderr and "Traceback" not in result.stderr


def test_cli_refuses_a_basic_auth_file_others_can_read(trail: Trail, tmp_path: Path) -> None:
    """A basic-auth file readable by group or others, or not one 'user:password' line, exits 2 naming the rule."""
    secrets = tmp_path / "basic"
    secrets.write_text("auditor:pw\n")
    secrets.chmod(0o644)
    shared = run_cli("ui", "--log-dir", str(trail.log_dir), "--host", "0.0.0.0", "--basic-auth-file", str(secrets))
    assert shared.returncode == 2 and "readable by its owner only (chmod 600" in shared.stderr
    secrets.chmod(0o600)
    secrets.write_text("no colon here\n")
    malformed = run_cli("ui", "--log-dir", str(trail.log_dir), "--basic-auth-file", str(secrets))
    assert malformed.returncode == 2 and "one line 'user:password'" in malformed.stderr
    assert "Traceback" not in shared.stderr + malformed.stderr


def test_cli_without_the_extra_says_how_to_install(trail: Trail) -> None:
    """Without starlette/jinja2/uvicorn, `ui` exits 2 naming the extra to install."""
    code = ("import sys; sys.modules['starlette'] = None; sys.modules['uvicorn'] = None\n"
            "import importlib.util; real = importlib.util.find_spec\n"
            "importlib.util.find_spec = lambda n, *a: None if n in ('starlette', 'uvicorn') else real(n, *a)\n"
            "from secureml.audit.cli import main; sys.exit(main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-c", code, "ui", "--log-dir", str(trail.log_dir)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2, result.stderr
    assert "pip install 'secureml-audit[ui]'" in result.stderr and "Traceback" not in result.stderr


def test_cli_serves_the_explorer(trail: Trail) -> None:
    """`secureml-audit ui --port P` serves the pages until it is stopped."""
    port = free_port_pair()
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "secureml-audit"), "ui", "--log-dir", str(trail.log_dir), "--port",
         str(port), "--token", "t0ken"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        reply = None
        while time.monotonic() < deadline:
            try:
                reply = fetch(f"http://127.0.0.1:{port}/operations", headers={"Authorization": "Bearer t0ken"})
            except OSError:
                assert process.poll() is None, process.communicate()
                time.sleep(0.2)
                continue
            if reply.status != 503:  # 503: the lake's first index is still being built (a loaded machine)
                break
            assert reply.headers.get("retry-after") == "2", reply.headers
            time.sleep(0.5)
        assert reply is not None and reply.status == 200 and "credit_risk_model_training" in reply.text
    finally:
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}/?token=..." in err
