"""Asking witnesses to cosign checkpoints: the client half of c2sp.org/tlog-witness ``add-checkpoint``.

A witness is configured as its submission URL and its cosignature/v1 vkey (type 0x04), from
``--witness URL VKEY`` or ``$SECUREML_AUDIT_WITNESSES`` (``URL VKEY`` pairs, whitespace
separated); the URL ``kafka`` names a witness that reads the checkpoints topic instead
(``topicwitness``). The client sends the old size it believes the witness holds, a consistency proof
from that size and the checkpoint note; on "409 Conflict" with the witness's size it proves
again from that size, once. Only cosignatures that verify against the configured key are
kept. A witness that is down or refuses is reported and skipped: ingestion goes on, and the
next checkpoint asks again.
"""

from __future__ import annotations

import base64
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from secureml.audit.config import ENV_PREFIX
from secureml.integrity.exceptions import IntegrityError, NoteError, WitnessConfigError, WitnessError
from secureml.integrity.notes import (
    COSIGNATURE_V1,
    NoteKey,
    NoteSignature,
    SignedNote,
    parse_signature_lines,
    parse_vkey,
    signature_holds,
)
from secureml.integrity.treehead import TreeHead

log = logging.getLogger(__name__)

WITNESSES_ENV = ENV_PREFIX + "WITNESSES"
SIZE_CONTENT_TYPE = "text/x.tlog.size"
NOTE_CONTENT_TYPE = "text/plain; charset=utf-8"
TIMEOUT = 10.0
MAX_PROOF_LINES = 63


@dataclass(frozen=True)
class WitnessEndpoint:
    """One witness: its submission URL prefix and its cosignature/v1 key."""

    url: str
    key: NoteKey


def parse_witnesses(tokens: Sequence[str], where: str = "--witness") -> list[WitnessEndpoint]:
    """Witnesses from ``URL VKEY`` pairs; AuditError naming the bad entry and the rule."""
    if len(tokens) % 2:
        raise WitnessConfigError(f"{where}: witnesses are given as URL VKEY pairs; {len(tokens)} values is not pairs")
    witnesses = []
    for url, vkey in zip(tokens[0::2], tokens[1::2]):
        if url != "kafka" and not url.startswith(("http://", "https://")):
            raise WitnessConfigError(f"{where}: witness URL {url!r} must start with http:// or https:// (or be 'kafka' "
                               "for a witness that reads the checkpoints topic)")
        try:
            key = parse_vkey(vkey, expect=COSIGNATURE_V1, where=where)
        except NoteError as exc:
            raise WitnessConfigError(str(exc)) from None
        witnesses.append(WitnessEndpoint(url.rstrip("/"), key))
    return witnesses


def witnesses_from_env() -> list[WitnessEndpoint]:
    """The witnesses configured in ``$SECUREML_AUDIT_WITNESSES``."""
    return parse_witnesses(os.environ.get(WITNESSES_ENV, "").split(), WITNESSES_ENV)


def request_body(old_size: int, proof: Sequence[bytes], note: SignedNote) -> bytes:
    """An ``add-checkpoint`` request body: old size line, proof lines, blank line, the checkpoint."""
    lines = [f"old {old_size}\n", *(base64.b64encode(node).decode() + "\n" for node in proof), "\n"]
    return ("".join(lines) + note.encode()).encode()


def http(method: str, url: str, body: bytes | None = None, timeout: float = TIMEOUT) -> tuple[int, str, str]:
    """(status, content type, body text) of one request; WitnessError when the witness cannot be reached."""
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": NOTE_CONTENT_TYPE})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http(s) checked above
            return response.status, response.headers.get_content_type(), response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get_content_type(), exc.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WitnessError(f"witness at {url} cannot be reached: {reason}") from None


class WitnessClient:
    """Submits checkpoints to witnesses and keeps what size each one last cosigned."""

    def __init__(self, witnesses: Sequence[WitnessEndpoint], timeout: float = TIMEOUT) -> None:
        self.witnesses = list(witnesses)
        self.timeout = timeout
        self._known: dict[str, int] = {}

    def cosign(
        self, note: SignedNote, guess: int, proof: Callable[[int], list[bytes]],
        only: Sequence[WitnessEndpoint] | None = None,
    ) -> list[NoteSignature]:
        """The valid cosignatures every reachable, agreeing witness returns for ``note``.

        ``guess`` is the old size to try first (the previous checkpoint's); ``proof(old)`` the
        consistency proof from ``old`` leaves to the checkpoint. ``only`` limits it to some witnesses.
        """
        head = TreeHead.parse(note.text)
        cosignatures = []
        for witness in self.witnesses if only is None else only:
            if witness.url == "kafka":  # it reads the checkpoints topic; its cosignatures are collected
                continue
            try:
                cosignatures.append(self.submit(witness, note, head, self._known.get(witness.url, guess), proof))
            except IntegrityError as exc:
                log.warning("checkpoint of %d events not cosigned by %s: %s (it is asked again at the next "
                            "checkpoint)", head.size, witness.key.name, exc)
        return cosignatures

    def submit(
        self, witness: WitnessEndpoint, note: SignedNote, head: TreeHead, old: int,
        proof: Callable[[int], list[bytes]],
    ) -> NoteSignature:
        """One witness's cosignature of the checkpoint; WitnessError saying why there is none."""
        for attempt in range(2):
            if old > head.size:
                raise WitnessError(
                    f"it has cosigned a log tree of {old} events, more than this checkpoint's {head.size}: the log "
                    "was rolled back (newest checkpoints removed) or forked, and no witness will cosign it")
            path = proof(old)
            if len(path) > MAX_PROOF_LINES:
                raise WitnessError(f"the consistency proof has {len(path)} nodes, more than the protocol's 63")
            status, content_type, text = http("POST", f"{witness.url}/add-checkpoint",
                                              request_body(old, path, note), self.timeout)
            if status == 409 and content_type == SIZE_CONTENT_TYPE and attempt == 0:
                try:
                    old = int(text.strip())
                except ValueError:
                    raise WitnessError(f"it answered 409 with a size that is not a number: {text[:40]!r}") from None
                continue
            if status != 200:
                raise WitnessError(f"it refused the checkpoint (HTTP {status}): {text.strip()[:300]}")
            try:
                lines = parse_signature_lines(text, f"cosignature from {witness.url}")
            except NoteError as exc:
                raise WitnessError(f"its answer is not signature lines: {exc}") from None
            for line in SignedNote(note.text, tuple(lines)).by(witness.key):
                if signature_holds(note.text, line, witness.key):
                    self._known[witness.url] = head.size
                    return line
            raise WitnessError("its answer holds no valid cosignature by its configured key (wrong vkey?)")
        raise WitnessError("it kept answering 409 Conflict: another client moved it on meanwhile")
