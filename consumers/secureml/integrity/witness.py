"""A witness: cosigns a log's checkpoints only when they extend what it cosigned before (c2sp.org/tlog-witness).

Run by another party than the log's operator, with its own Ed25519 key and its own state. For
every log it is configured with (origin and the log's note vkey) it keeps the latest checkpoint
it cosigned: one owner-only JSON file per origin under its state directory, replaced whole
and fsynced before it answers, under a lock that makes check-and-update atomic across threads
and processes. ``POST <prefix>/add-checkpoint`` answers as the specification says: 200 with a
cosignature/v1 line; 400 malformed; 403 no trusted signature; 404 unknown origin; 409 with
``text/x.tlog.size`` when the old size is not the one it holds, or plain 409 when a checkpoint
of its size has another root (a fork); 422 when the consistency proof does not hold. A
refused checkpoint that the log did sign is kept under ``evidence/``: proof of misbehaviour.
``GET <prefix>/checkpoint?origin=<origin>`` returns the latest cosigned checkpoint (log
signature and cosignature), so auditors can tell a rolled-back lake.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secureml.audit._fs import file_lock, make_private_dir, write_atomically
from secureml.integrity.cosigning import NOTE_CONTENT_TYPE, SIZE_CONTENT_TYPE
from secureml.integrity.exceptions import NoteError, WitnessError
from secureml.integrity.merkle import EMPTY_ROOT, consistency_holds
from secureml.integrity.notes import COSIGNATURE_V1, NoteKey, SignedNote, cosignature, parse_note, verified_by
from secureml.integrity.treehead import TreeHead

log = logging.getLogger(__name__)

MAX_BODY = 1 << 16
MAX_PROOF_LINES = 63
_OLD = re.compile(r"old (0|[1-9][0-9]*)")


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status, content type, body."""

    status: int
    body: str
    content_type: str = NOTE_CONTENT_TYPE


@dataclass(frozen=True)
class Submission:
    """An ``add-checkpoint`` request body, parsed."""

    old_size: int
    proof: tuple[bytes, ...]
    checkpoint: str


def parse_submission(body: bytes) -> Submission:
    """The old size, proof lines and checkpoint of a request body; NoteError naming the line that is wrong."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise NoteError("add-checkpoint: the request body is not UTF-8") from None
    head, blank, checkpoint = text.partition("\n\n")
    if not blank:
        raise NoteError("add-checkpoint: no empty line after the old size and proof lines")
    lines = head.split("\n")
    match = _OLD.fullmatch(lines[0])
    if match is None:
        raise NoteError(f"add-checkpoint: the first line {lines[0][:40]!r} is not 'old <size>'")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise NoteError(f"add-checkpoint: {len(lines) - 1} proof lines, more than {MAX_PROOF_LINES}")
    proof = []
    for line in lines[1:]:
        try:
            node = base64.b64decode(line, validate=True)
        except binascii.Error:
            node = b""
        if len(node) != 32:
            raise NoteError(f"add-checkpoint: proof line {line[:60]!r} is not the base64 of a 32-byte hash")
        proof.append(node)
    return Submission(int(match.group(1)), tuple(proof), checkpoint)


class WitnessState:
    """The latest cosigned checkpoint of every log, one durable owner-only file per origin."""

    def __init__(self, directory: Path) -> None:
        self.directory = make_private_dir(Path(directory))

    def _path(self, origin: str) -> Path:
        return self.directory / f"{hashlib.sha256(origin.encode()).hexdigest()[:32]}.json"

    def lock(self, origin: str) -> Any:
        """Held while one log's state is checked and updated."""
        return file_lock(self.directory / f".{self._path(origin).stem}.lock")

    def latest(self, origin: str) -> dict[str, Any] | None:
        """``{"origin", "size", "root" (base64), "checkpoint" (the cosigned note), "cosigned_at"}`` or None."""
        try:
            raw = json.loads(self._path(origin).read_text("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise WitnessError(f"witness state {self._path(origin)} is unreadable ({exc}): restore it from a "
                               "backup; never start over from empty, that would let the log roll back") from None
        if raw.get("origin") != origin:
            raise WitnessError(f"witness state {self._path(origin)} belongs to {raw.get('origin')!r}, not {origin!r}")
        return raw

    def record(self, origin: str, head: TreeHead, note: SignedNote, when: int) -> None:
        """Persist the newly cosigned checkpoint (whole and durable before the witness answers)."""
        record = {"origin": origin, "size": head.size, "root": base64.b64encode(head.root).decode(),
                  "checkpoint": note.encode(), "cosigned_at": when}
        write_atomically(self._path(origin), json.dumps(record, sort_keys=True).encode() + b"\n", 0o600)

    def keep_evidence(self, origin: str, submission: bytes, reason: str) -> None:
        """Keep a refused checkpoint the log signed: proof of a fork or rollback."""
        directory = make_private_dir(self.directory / "evidence")
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        name = f"{self._path(origin).stem}-{stamp}-{hashlib.sha256(submission).hexdigest()[:12]}.txt"
        write_atomically(directory / name, f"# {origin}: {reason}\n".encode() + submission, 0o600)


class Witness:
    """The witness's logic, apart from HTTP: checks a submission and cosigns it, or says why not."""

    def __init__(self, name: str, key: Ed25519PrivateKey, logs: Sequence[NoteKey], state: WitnessState) -> None:
        self.key = key
        self.cosigner = NoteKey(name, key.public_key(), COSIGNATURE_V1)
        self.name = self.cosigner.name
        self.logs: dict[str, list[NoteKey]] = {}
        for log_key in logs:
            if log_key.type != 0x01:
                raise WitnessError(f"--log {log_key.vkey()}: a log's vkey has signature type 0x01 (Ed25519 note key)")
            self.logs.setdefault(log_key.name, []).append(log_key)
        self.state = state

    def add_checkpoint(self, body: bytes) -> Answer:
        """Handle one ``add-checkpoint`` body."""
        try:
            submission = parse_submission(body)
            note = parse_note(submission.checkpoint, "checkpoint")
            head = TreeHead.parse(note.text, "checkpoint")
        except NoteError as exc:
            return Answer(HTTPStatus.BAD_REQUEST, f"{exc}\n")
        keys = self.logs.get(head.origin)
        if keys is None:
            return Answer(HTTPStatus.NOT_FOUND, f"unknown log origin {head.origin!r}\n")
        try:
            if not any(verified_by(note, key) for key in keys):
                return Answer(HTTPStatus.FORBIDDEN, "no signature by a trusted key of this log\n")
        except NoteError as exc:
            return Answer(HTTPStatus.FORBIDDEN, f"{exc}\n")
        if submission.old_size > head.size:
            return Answer(HTTPStatus.BAD_REQUEST, f"old size {submission.old_size} is larger than the checkpoint's "
                          f"{head.size}\n")
        with self.state.lock(head.origin):
            return self._check_and_cosign(submission, note, head, body)

    def _check_and_cosign(self, submission: Submission, note: SignedNote, head: TreeHead, body: bytes) -> Answer:
        latest = self.state.latest(head.origin)
        known_size = latest["size"] if latest else 0
        known_root = base64.b64decode(latest["root"]) if latest else EMPTY_ROOT
        if submission.old_size != known_size:
            if submission.old_size > known_size or head.size < known_size:
                self.state.keep_evidence(head.origin, body,
                                         f"old size {submission.old_size}, witness holds {known_size}")
            return Answer(HTTPStatus.CONFLICT, f"{known_size}\n", SIZE_CONTENT_TYPE)
        if submission.old_size == 0 and submission.proof:
            return Answer(HTTPStatus.BAD_REQUEST, "a consistency proof from size 0 must be empty\n")
        if head.size == known_size and head.root != known_root:
            self.state.keep_evidence(head.origin, body, f"fork: another root at size {known_size}")
            log.warning("refused a fork of %s: a checkpoint of size %d with another root than the one cosigned",
                        head.origin, head.size)
            return Answer(HTTPStatus.CONFLICT, f"fork: this witness cosigned another tree of {known_size} leaves\n")
        if known_size and not consistency_holds(known_size, head.size, known_root, head.root, submission.proof):
            self.state.keep_evidence(head.origin, body, f"inconsistent with size {known_size}")
            log.warning("refused a checkpoint of %s: size %d is not consistent with the cosigned size %d",
                        head.origin, head.size, known_size)
            return Answer(HTTPStatus.UNPROCESSABLE_ENTITY,
                          f"the consistency proof from {known_size} to {head.size} does not verify\n")
        when = max(int(time.time()), latest["cosigned_at"] if latest else 0)  # never back in time
        line = cosignature(note.text, self.name, self.key, when)
        self.state.record(head.origin, head, note.with_signatures([line]), when)
        log.info("cosigned %s at size %d", head.origin, head.size)
        return Answer(HTTPStatus.OK, line.line())

    def latest_checkpoint(self, origin: str) -> Answer:
        """The latest cosigned checkpoint of a log."""
        if origin not in self.logs:
            return Answer(HTTPStatus.NOT_FOUND, f"unknown log origin {origin!r}\n")
        latest = self.state.latest(origin)
        if latest is None:
            return Answer(HTTPStatus.NOT_FOUND, f"no checkpoint of {origin!r} cosigned yet\n")
        return Answer(HTTPStatus.OK, latest["checkpoint"])


def serve(witness: Witness, host: str, port: int, prefix: str = "") -> ThreadingHTTPServer:
    """An HTTP server for the witness (not yet serving: call ``serve_forever``)."""
    prefix = prefix.rstrip("/")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "secureml-audit-witness"

        def _answer(self, answer: Answer) -> None:
            data = answer.body.encode()
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            if urllib.parse.urlsplit(self.path).path != f"{prefix}/add-checkpoint":
                self._answer(Answer(HTTPStatus.NOT_FOUND, "not found\n"))
                return
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                length = -1
            if length < 0:
                self._answer(Answer(HTTPStatus.LENGTH_REQUIRED, "Content-Length required\n"))
                return
            if length > MAX_BODY:
                self._answer(Answer(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"at most {MAX_BODY} bytes\n"))
                return
            try:
                answer = witness.add_checkpoint(self.rfile.read(length))
            except (WitnessError, OSError) as exc:
                log.error("add-checkpoint failed: %s", exc)
                answer = Answer(HTTPStatus.INTERNAL_SERVER_ERROR, "the witness cannot update its state\n")
            self._answer(answer)

        def do_GET(self) -> None:  # noqa: N802
            url = urllib.parse.urlsplit(self.path)
            origins = urllib.parse.parse_qs(url.query).get("origin")
            if url.path != f"{prefix}/checkpoint" or not origins:
                self._answer(Answer(HTTPStatus.NOT_FOUND, "not found (GET /checkpoint?origin=<log origin>)\n"))
                return
            try:
                self._answer(witness.latest_checkpoint(origins[0]))
            except WitnessError as exc:
                log.error("%s", exc)
                self._answer(Answer(HTTPStatus.INTERNAL_SERVER_ERROR, "the witness cannot read its state\n"))

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
            log.debug("%s " + format, self.address_string(), *args)

    return ThreadingHTTPServer((host, port), Handler)
