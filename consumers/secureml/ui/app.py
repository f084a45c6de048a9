"""The audit explorer: a read-only Starlette app with server-rendered pages, htmx and Plotly, all served locally.

Pages: operations (filters, paged), one operation's timeline (seq order, chain status),
alerts, data-subject request deadlines, integrity (background verify, checkpoints, inclusion
proofs to download), charts, and PDF/HTML report downloads. A request carrying ``HX-Request``
(htmx) gets only the part of the page it replaces.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from secureml.audit.exceptions import AuditError, AuditValidationError
from secureml.integrity import prove
from secureml.integrity.exceptions import ProofError
from secureml.reporting.generator import ReportGenerator
from secureml.ui.explorer import STATUSES, Explorer, OperationFilters, page_number
from secureml.ui.index import IndexPending
from secureml.ui.security import Access, Guard
from secureml.ui.verification import BackgroundVerifier

log = logging.getLogger(__name__)
STATIC = files("secureml.ui") / "static"
PLOTLY_JS = files("plotly") / "package_data" / "plotly.min.js"
NAV = (("operations", "/operations", "Operations"), ("alerts", "/alerts", "Alerts"),
       ("requests", "/requests", "Data-subject requests"), ("integrity", "/integrity", "Integrity"),
       ("charts", "/charts", "Charts"), ("reports", "/reports", "Reports"))
REPORT_FILTERS = ("start", "end", "operation_name", "operation_id", "user")
# Pages query the lake on a few long-lived threads: each keeps one DuckDB connection whose cache of
# Parquet footers stays warm (a thread per request would start cold); DuckDB parallelises each query.
QUERY_THREADS = 2
# A page waits this long for the index of a changed lake, then shows the last complete one (the budget is 300 ms).
INDEX_WAIT = 0.15
INDEXING_RELOAD = 2  # seconds between reloads of the page saying the first index is being built


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("secureml.ui", "templates"), autoescape=select_autoescape(default=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["utc"] = _utc
    env.filters["num"] = lambda n: "—" if n is None else f"{n:,}"
    env.globals["nav"] = NAV
    env.globals["statuses"] = STATUSES
    env.globals["query_string"] = query_string
    return env


def _utc(value: Any) -> str:
    """A time as 'YYYY-MM-DD HH:MM:SS UTC' (one format everywhere); text times as they are."""
    if value is None or value == "":
        return "—"
    if isinstance(value, (int, float)):
        value = dt.datetime.fromtimestamp(value, dt.UTC)
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return aware.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def create_app(log_dir: str | os.PathLike[str], *, access: Access | None = None,
               public_key: str | os.PathLike[str] | None = None, verify: bool = True,
               index_wait: float | None = INDEX_WAIT) -> Guard:
    """The explorer over ``log_dir`` behind its guard (read-only methods, access, headers).

    ``verify``: the integrity page starts ``verify`` in the background when no result covers the
    lake's current version (False: it only lists the checkpoints). ``index_wait``: the seconds a
    page waits for the index to catch up with a changed lake before it shows the last complete
    index, marked as such (None: it waits for the build).
    """
    explorer = Explorer(log_dir, index_wait=index_wait)
    verifier = BackgroundVerifier(log_dir, public_key)
    env = _environment()
    pool = ThreadPoolExecutor(QUERY_THREADS, thread_name_prefix="ui-query")
    # The index of a large lake takes seconds to build: start on it before the first page asks. A failure
    # here is left to the pages, which build it again and show the error.
    pool.submit(explorer.warm)

    async def in_pool(function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, function, *args)

    def render(request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
        partial = request.headers.get("hx-request") == "true" and request.headers.get("hx-target")
        name = f"{template}.html"
        html = env.get_template(name).render(request=request, partial=bool(partial), log_dir=str(log_dir),
                                             **context)
        return Response(html, status_code=status_code, media_type="text/html; charset=utf-8")

    def page(template: str, section: str) -> Callable[..., Any]:
        """A route handler: its data function runs in a worker thread; bad input is a 400 page naming it."""
        def wrap(load: Callable[[Request], dict[str, Any]]) -> Callable[[Request], Any]:
            async def handler(request: Request) -> Response:
                try:
                    context = await in_pool(load, request)
                except IndexPending as exc:  # the first index of a large lake: say so, and reload
                    response = render(request, "indexing", 503, section=section, pending=exc)
                    response.headers["Retry-After"] = str(INDEXING_RELOAD)
                    return response
                except AuditValidationError as exc:
                    return render(request, "error", 400, section=section, message=str(exc))
                except AuditError as exc:
                    return render(request, "error", 500, section=section, message=str(exc))
                if isinstance(context, Response):
                    return context
                page = context.get("page")
                return render(request, template, section=section, behind=getattr(page, "behind", False), **context)
            return handler
        return wrap

    @page("operations", "operations")
    def operations(request: Request) -> dict[str, Any]:
        q = request.query_params
        filters = OperationFilters(**{k: q.get(k, "").strip() for k in OperationFilters.__dataclass_fields__})
        number = page_number(q.get("page"))
        result = explorer.operations(filters, number)
        return {"filters": filters, "page": result, "query": filters.query()}

    @page("operation", "operations")
    def operation(request: Request) -> dict[str, Any] | Response:
        operation_id = request.path_params["operation_id"]
        summary, result = explorer.operation(operation_id, page_number(request.query_params.get("page")))
        if summary is None:
            return render(request, "error", 404, section="operations",
                          message=f"No operation {operation_id!r} in this audit trail.")
        return {"summary": summary, "page": result, "query": {}}

    @page("alerts", "alerts")
    def alerts(request: Request) -> dict[str, Any]:
        return {"page": explorer.alerts(page_number(request.query_params.get("page"))), "query": {}}

    @page("requests", "requests")
    def requests(request: Request) -> dict[str, Any]:
        now = dt.datetime.now(dt.UTC)
        counts, result = explorer.requests(page_number(request.query_params.get("page")), now)
        return {"counts": counts, "page": result, "now": now, "query": {}}

    @page("integrity", "integrity")
    def integrity(request: Request) -> dict[str, Any]:
        return {"state": verifier.state(start=verify), "verify": verify, "checkpoints": explorer.checkpoints()[:20]}

    @page("charts", "charts")
    def charts(_request: Request) -> dict[str, Any]:
        return {}

    @page("reports", "reports")
    def reports(_request: Request) -> dict[str, Any]:
        return {"fields": REPORT_FILTERS}

    async def chart_data(_request: Request) -> Response:
        return JSONResponse(await in_pool(explorer.charts))

    async def proof(request: Request) -> Response:
        event_id = request.query_params.get("event_id", "").strip()
        if not event_id:
            return PlainTextResponse("400 Bad Request: ui proof: invalid 'event_id': give the id of an event\n", 400)
        try:
            body = await in_pool(prove, log_dir, event_id)
        except ProofError as exc:
            return PlainTextResponse(f"404 Not Found: {exc}\n", 404)
        name = "proof-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in event_id)[:100] + ".json"
        return Response(json.dumps(body, indent=2, sort_keys=True) + "\n", media_type="application/json",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    async def report(request: Request) -> Response:
        fmt = request.path_params["fmt"]
        if fmt not in ("pdf", "html"):
            return PlainTextResponse("404 Not Found: reports come as audit-report.pdf or audit-report.html\n", 404)
        q = request.query_params
        filters: dict[str, object] = {"log_dir": str(log_dir)}
        for key, name in (("start", "start_time"), ("end", "end_time"), ("operation_name", "operation_name"),
                          ("operation_id", "operation_id"), ("user", "user")):
            if q.get(key, "").strip():
                filters[name] = q[key].strip()
        # Written under log_dir (owner-only, removed once sent): nothing of the trail lands elsewhere.
        folder = Path(tempfile.mkdtemp(prefix=".ui-report-", dir=log_dir))
        path = folder / f"audit-report.{fmt}"
        try:
            await asyncio.to_thread(ReportGenerator(progress=False).generate_audit_report, filters, path)
        except AuditError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            return PlainTextResponse(f"400 Bad Request: {exc}\n", 400)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return FileResponse(path, filename=path.name, background=BackgroundTask(shutil.rmtree, folder, True),
                            media_type="application/pdf" if fmt == "pdf" else "text/html; charset=utf-8")

    async def plotly_js(_request: Request) -> Response:
        return FileResponse(str(PLOTLY_JS), media_type="text/javascript")

    async def home(_request: Request) -> Response:
        return RedirectResponse("/operations", status_code=303)

    routes = [
        Route("/", home),
        Route("/operations", operations),
        Route("/operations/{operation_id:path}", operation),
        Route("/alerts", alerts),
        Route("/requests", requests),
        Route("/integrity", integrity),
        Route("/proof", proof),
        Route("/charts", charts),
        Route("/charts/data.json", chart_data),
        Route("/reports", reports),
        Route("/reports/audit-report.{fmt:str}", report),
        Route("/static/plotly.min.js", plotly_js),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]
    app = Starlette(routes=routes)
    return Guard(app, access or Access())


def query_string(query: dict[str, str], **changes: object) -> str:
    """A page's query string with some parameters changed (None removes one)."""
    merged = {**query, **{k: str(v) for k, v in changes.items() if v is not None}}
    return urlencode(merged)
