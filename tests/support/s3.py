"""A local S3 endpoint for the lake tests, a fresh bucket per test, and the delta-rs options for it.

The endpoint is SECUREML_AUDIT_S3_ENDPOINT when set, else the one ``scripts/s3-local start``
runs (moto's server mode, one request at a time so that conditional writes are atomic). Register
the fixtures in a conftest with ``from support.s3 import s3_endpoint, s3_lake  # noqa: F401``.

Safe concurrent commits without a DynamoDB lock: deltalake 1.x commits version N of a table on
S3 with a PUT of ``_delta_log/<N>.json`` carrying ``If-None-Match: *`` (object_store's
``PutMode::Create``), so the store itself lets exactly one of two racing writers create it. That
needs object_store's conditional put in ``etag`` mode (its default, set explicitly here so that
an ``AWS_CONDITIONAL_PUT=disabled`` in the environment cannot turn it off) and no
``AWS_S3_LOCKING_PROVIDER`` (delta-rs 1.x no longer has the DynamoDB log store).
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import pytest

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
S3_SCRIPT = REPO / "scripts" / "s3-local"
ENDPOINT_ENV = "SECUREML_AUDIT_S3_ENDPOINT"
ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"
REGION = "us-east-1"
START_TIMEOUT_S = 120

# Read at import: tests/conftest.py removes every SECUREML_AUDIT_* variable before each test.
_ENDPOINT_FROM_ENV = os.environ.get(ENDPOINT_ENV, "")


class S3EndpointError(RuntimeError):
    """The local S3 endpoint could not be started or reached."""


@dataclass(frozen=True)
class S3Lake:
    """A Delta table location in a bucket of its own, with the storage options that reach it."""

    uri: str
    endpoint: str
    bucket: str
    storage_options: dict[str, str] = field(repr=False)

    def via(self, endpoint: str) -> S3Lake:
        """The same table reached through another endpoint URL (e.g. a CommitGate in front of it)."""
        return S3Lake(self.uri, endpoint, self.bucket, storage_options(endpoint))


def storage_options(endpoint: str) -> dict[str, str]:
    """Options for deltalake (delta-rs) that reach an S3 endpoint over HTTP and commit safely."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "AWS_REGION": REGION,
        "AWS_ALLOW_HTTP": "true",
        # PUT-if-absent (If-None-Match: *) on each commit file is what makes concurrent commits safe.
        "conditional_put": "etag",
    }


def s3_client(endpoint: str) -> Any:
    """A boto3 S3 client for the endpoint, with the dummy credentials the endpoint accepts."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )


def start_endpoint() -> tuple[str, bool]:
    """The endpoint URL, and whether this call started it (so that only then should it be stopped)."""
    if os.environ.get(ENDPOINT_ENV) or _ENDPOINT_FROM_ENV:
        return (os.environ.get(ENDPOINT_ENV) or _ENDPOINT_FROM_ENV).rstrip("/"), False
    if not os.access(S3_SCRIPT, os.X_OK):
        raise S3EndpointError(f"{S3_SCRIPT} is missing or not executable (chmod +x it), or set {ENDPOINT_ENV}")
    # The endpoint runs on the interpreter running the tests, which has the test extra (moto[server]).
    env = {**os.environ, "PYTHON": os.environ.get("PYTHON", sys.executable)}
    try:
        done = subprocess.run(
            [str(S3_SCRIPT), "start"], capture_output=True, text=True, timeout=START_TIMEOUT_S, env=env, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise S3EndpointError(
            f"scripts/s3-local start did not finish within {START_TIMEOUT_S}s; see: scripts/s3-local logs"
        ) from exc
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines or not lines[-1].startswith("http://"):
        raise S3EndpointError(
            f"no local S3 endpoint: scripts/s3-local start exited {done.returncode}; fix what it says "
            f"below or point {ENDPOINT_ENV} at a running endpoint:\n{done.stderr[-3000:]}"
        )
    # Its start runs under a lock and says so when it launched the server itself.
    started = "starting moto S3 (pid" in done.stderr
    logger.info("local S3 endpoint %s (%s)", lines[-1], "started" if started else "already running")
    return lines[-1], started


def stop_endpoint() -> None:
    """Stop the endpoint that scripts/s3-local started (it stops only its own process)."""
    done = subprocess.run([str(S3_SCRIPT), "stop"], capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        logger.warning("scripts/s3-local stop exited %s: %s", done.returncode, done.stderr[-2000:])


def create_lake(endpoint: str, table: str = "lake/events") -> S3Lake:
    """A new bucket with a random name, and the location of a (not yet created) table in it."""
    bucket = f"lake-{uuid.uuid4().hex[:16]}"
    s3_client(endpoint).create_bucket(Bucket=bucket)
    return S3Lake(f"s3://{bucket}/{table.strip('/')}", endpoint, bucket, storage_options(endpoint))


def delete_bucket(endpoint: str, bucket: str) -> None:
    """Delete a bucket and everything in it (the endpoint keeps all objects in memory)."""
    client = s3_client(endpoint)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    client.delete_bucket(Bucket=bucket)


# ----------------------------------------------------------------------------- commit gate

_COMMIT_PATH = re.compile(r"/_delta_log/(\d{20})\.json$")
# Hop-by-hop headers (RFC 9110 7.6.1) belong to one connection and are not forwarded.
_HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "expect",
}


class CommitGate:
    """A pass-through HTTP proxy to an S3 endpoint that holds the PUTs of one commit version until
    ``parties`` of them have arrived, then lets them all through at once.

    Without it two writers rarely both reach the conditional PUT: delta-rs lists the log just
    before it commits, so the slower writer usually sees the faster one's commit there. Holding
    the PUTs makes every racer send ``If-None-Match: *`` for the same version, and the endpoint
    alone decides the winner.
    """

    def __init__(self, upstream: str, version: int, parties: int = 2, timeout_s: float = 60.0) -> None:
        """Prepare a gate in front of ``upstream`` for the commit file of table version ``version``."""
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"upstream must look like http://HOST:PORT, not {upstream!r}")
        self.upstream_host, self.upstream_port = parts.hostname, parts.port
        self.version = version
        self.parties = parties
        self._barrier = threading.Barrier(parties, timeout=timeout_s)
        self._lock = threading.Lock()
        self.held = 0  # commit PUTs of `version` that reached the gate
        self.statuses: list[int] = []  # the endpoint's answers to them
        self.timed_out = False
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        """The URL to give writers instead of the upstream endpoint."""
        if self._server is None:
            raise RuntimeError("CommitGate is not started; use it as a context manager")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> CommitGate:
        """Start serving on a free loopback port."""
        gate = self

        class Handler(_ForwardingHandler):
            owner = gate

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="commit-gate", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop serving and release anything still held."""
        self._barrier.abort()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def hold(self, method: str, path: str) -> bool:
        """Block a commit PUT of the gated version until all parties have sent theirs; True if it was one."""
        match = _COMMIT_PATH.search(urlsplit(path).path)
        if method != "PUT" or match is None or int(match.group(1)) != self.version:
            return False
        with self._lock:
            self.held += 1
            if self.held > self.parties:  # a late retry: nothing left to line up with
                return True
        try:
            self._barrier.wait()
        except threading.BrokenBarrierError:
            with self._lock:
                self.timed_out = True
            logger.warning("commit gate: only %s of %s commit PUTs arrived in time", self.held, self.parties)
        return True

    def record(self, status: int) -> None:
        """Note the endpoint's answer to a held commit PUT."""
        with self._lock:
            self.statuses.append(status)


class _ForwardingHandler(BaseHTTPRequestHandler):
    """Forwards each request unchanged to the gate's upstream and relays the answer."""

    protocol_version = "HTTP/1.1"
    owner: CommitGate

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        """Forward a GET."""
        self._forward()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_GET  # noqa: N815

    def _forward(self) -> None:
        """Send the request upstream (after the gate, for commit PUTs) and copy the response back."""
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        held = self.owner.hold(self.command, self.path)
        # Host is forwarded as received: the client signed it, and the endpoint ignores it otherwise.
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        conn = http.client.HTTPConnection(self.owner.upstream_host, self.owner.upstream_port, timeout=120)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            resp_headers = resp.getheaders()
        except OSError as exc:
            logger.warning("commit gate: upstream %s %s failed: %s", self.command, self.path, exc)
            self.send_error(502, f"upstream unreachable: {exc}")
            return
        finally:
            conn.close()
        if held:
            self.owner.record(resp.status)
        self.send_response(resp.status, resp.reason)
        for name, value in resp_headers:
            # A HEAD answer keeps the object's Content-Length; other bodies are re-sent whole.
            if name.lower() in _HOP_BY_HOP or (name.lower() == "content-length" and self.command != "HEAD"):
                continue
            self.send_header(name, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        """Send the access log to logging instead of stderr."""
        logger.debug("commit gate: " + format, *args)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """URL of a local S3 endpoint for the whole session; fails (never skips) when none can be had."""
    failure = ""
    try:
        url, started = start_endpoint()
    except S3EndpointError as exc:
        failure = str(exc)
    if failure:  # failed outside the except block, so pytest shows the reason once, not chained
        pytest.fail(failure, pytrace=False)
    yield url
    if started:  # stop only the endpoint this session started
        stop_endpoint()


@pytest.fixture
def s3_lake(s3_endpoint: str) -> Iterator[S3Lake]:
    """A Delta table location in a fresh bucket of the session's S3 endpoint, removed afterwards."""
    lake = create_lake(s3_endpoint)
    yield lake
    try:
        delete_bucket(s3_endpoint, lake.bucket)
    except Exception as exc:  # noqa: BLE001 - cleanup only; the endpoint is in memory anyway
        logger.warning("could not delete bucket %s: %s", lake.bucket, exc)
