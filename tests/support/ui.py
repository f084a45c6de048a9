"""Helpers the explorer tests share: a small audit trail with every page's kind of data, and a live server.

No tests here; the fixtures ``trail``, ``served`` and the autouse ``_trail_keystore`` (the
``*_fixture`` functions) are imported by the explorer's test modules, each of which gets its own.
The trail is logged through the embedded transport, materialised with a signing key (so proofs
can be made), and run through the alerter, like a real deployment's.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from secureml.alerting.alerter import Alerter
from secureml.audit import AuditTrail
from secureml.integrity.keys import SIGNING_KEY_ENV
from secureml.materializer import materialize_embedded
from secureml.ui.app import create_app
from secureml.ui.security import Access
from support.ports import free_port_pair

HOSTILE_NAME = "<script>alert('x')</script>&op"
OPERATIONS = 60  # more than one page of operations (50 a page)


@dataclass(frozen=True)
class Trail:
    """What build_trail logged, for the tests to look for."""

    log_dir: Path
    operation_ids: dict[str, str]  # name -> operation_id of the named operations
    inference_operation: str  # operation_id of the one with more than a page of events


KEYSTORE_ENV = "SECUREML_AUDIT_KEYSTORE_DIR"


def keystore_of(log_dir: Path) -> Path:
    """Where a test trail's privacy keys are kept: beside its log dir, never the home directory."""
    return log_dir.parent / "keystore"


def build_trail(log_dir: Path) -> Trail:
    """Log operations of several names, users, regulations and outcomes; materialise them; raise alerts."""
    ids: dict[str, str] = {}
    options = {"log_dir": log_dir, "bootstrap_servers": ""}
    for i in range(OPERATIONS):
        trail = AuditTrail(f"batch_scoring_{i % 3}", regulations=["CCPA"] if i % 2 else ["GDPR"], user=f"user_{i % 4}",
                           **options)
        trail.log_data_access("customers", ["income"], 10 + i, "scoring")
        trail.close(status="error" if i % 10 == 0 else "completed")
    with AuditTrail("credit_risk_model_training", regulations=["GDPR"], user="analyst_123", **options) as trail:
        trail.log_data_access("customer_financial_data", ["income", "age"], 5000, purpose="model_training")
        trail.log_compliance_check("purpose_limitation", "GDPR", False, {"reason": "no purpose recorded"})
        for n in range(70):
            trail.log_model_inference("credit_risk_classifier_v1", f"application_{n}", "low_risk", 0.85)
        ids["credit_risk_model_training"] = trail.operation_id
    with AuditTrail("dsr_handling", regulations=["GDPR"], user="dpo", **options) as trail:
        trail.log_user_request("access", "subject_4711", {"request_date": "2020-01-10T00:00:00"}, status="received")
        ids["dsr_handling"] = trail.operation_id
    with AuditTrail(HOSTILE_NAME, user="<b>mallory</b>", **options) as trail:
        trail.log_data_access("<img src=x onerror=alert(1)>", ["c"], 1, "<script>steal()</script>")
        ids[HOSTILE_NAME] = trail.operation_id
    running = AuditTrail("still_running", regulations=["GDPR"], user="user_9", **options)
    running.log_data_access("customers", ["email"], 3, "support")
    running.flush()
    ids["still_running"] = running.operation_id
    materialize_embedded(log_dir)
    Alerter(None, log_dir=log_dir, bootstrap_servers="").run(once=True)
    return Trail(log_dir, ids, ids["credit_risk_model_training"])


@dataclass(frozen=True)
class Served:
    """A running explorer."""

    url: str
    server: uvicorn.Server


@contextmanager
def serve(log_dir: Path, access: Access | None = None, *, verify: bool = True,
          index_wait: float | None = None) -> Iterator[Served]:
    """The explorer over log_dir on a free loopback port, in a thread, for the duration of the block.

    Its pages wait for the lake's index (``index_wait`` None) unless told otherwise: what a test
    logged just before shows on the next page however loaded the machine is.
    """
    port = free_port_pair()
    app = create_app(log_dir, access=access, verify=verify, index_wait=index_wait)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="ui-server", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"the explorer did not start on {url}")
        time.sleep(0.05)
    try:
        yield Served(url, server)
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="module", name="trail")
def trail_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trail]:
    """One audit trail for the module, signed with a key made for it (never the home directory's)."""
    base = tmp_path_factory.mktemp("ui")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(SIGNING_KEY_ENV, str(base / "keys" / "signing_key.pem"))
        patch.setenv(KEYSTORE_ENV, str(keystore_of(base / "logs")))
        patch.delenv("SECUREML_AUDIT_LAKE_URI", raising=False)
        yield build_trail(base / "logs")


@pytest.fixture(autouse=True, name="_trail_keystore")
def trail_keystore_fixture(_clean_environment: None, trail: Trail, monkeypatch: pytest.MonkeyPatch) -> None:
    """The explorer reads with the privacy key store the module's trail was logged with."""
    monkeypatch.setenv(KEYSTORE_ENV, str(keystore_of(trail.log_dir)))


@pytest.fixture(scope="module", name="served")
def served_fixture(trail: Trail) -> Iterator[Served]:
    """The explorer over the module's trail, open to loopback without a credential."""
    with serve(trail.log_dir) as running:
        yield running


@dataclass(frozen=True)
class Reply:
    """An HTTP response, read whole."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        """The body as UTF-8 text."""
        return self.body.decode("utf-8")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def fetch(url: str, method: str = "GET", headers: dict[str, str] | None = None, data: bytes | None = None) -> Reply:
    """One HTTP request (redirects not followed); error statuses are returned, not raised."""
    request = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=120) as response:
            return Reply(response.status, {k.lower(): v for k, v in response.headers.items()}, response.read())
    except urllib.error.HTTPError as error:
        return Reply(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read())
