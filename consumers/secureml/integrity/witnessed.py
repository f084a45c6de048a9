"""``verify`` with witnesses: the latest checkpoint must carry enough valid cosignatures, and agree with them.

Offline, the latest checkpoint's C2SP note (``<sequence>.note``) must be the note of its log
tree, signed by the log's key, and carry valid cosignature/v1 lines from at least
``min_witnesses`` of the given witness keys. A witness cosigns only what extends what it
cosigned before, so an operator who rewrites the lake and re-signs it (with the real key) gets
no cosignature for the rewritten tree. Deleting the newest checkpoints leaves an older,
genuinely cosigned one behind: only the witnesses know more, so ``online`` witnesses are
asked for the latest checkpoint they cosigned, which the lake's chain must hold.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from secureml.audit.timeutil import micros_to_iso
from secureml.integrity.checkpoints import Checkpoint, StoredCheckpoint, read_note
from secureml.integrity.cosigning import WitnessEndpoint, http
from secureml.integrity.exceptions import IntegrityError, NoteError
from secureml.integrity.notes import COSIGNATURE_V1, NoteKey, cosignature_time, parse_note, parse_vkey, verified_by
from secureml.integrity.result import NOT_WITNESSED, NOTE_INVALID, ROLLED_BACK, Finding
from secureml.integrity.treehead import TreeHead, log_key


@dataclass(frozen=True)
class WitnessPolicy:
    """What ``verify`` demands of witnesses: keys, how many must have cosigned, and whom to ask online."""

    keys: tuple[NoteKey, ...] = ()
    min_witnesses: int = 1
    online: tuple[WitnessEndpoint, ...] = ()

    @property
    def active(self) -> bool:
        """True when anything about witnesses is to be checked."""
        return bool(self.keys or self.online)


def _when(seconds: int) -> str:
    return micros_to_iso(seconds * 1_000_000)


def check_witnessed(
    lake_root: Path, stored: list[StoredCheckpoint], key: Ed25519PublicKey | None, policy: WitnessPolicy
) -> tuple[list[Finding], str]:
    """Findings about the latest checkpoint's cosignatures (and the online witnesses' view), and a one-line summary."""
    chain = [item.checkpoint for item in stored if item.checkpoint is not None]
    latest = chain[-1] if chain else None

    def error(kind: str, message: str) -> Finding:
        return Finding(kind, "error", message, checkpoint=latest.sequence if latest else None)

    if latest is None or latest.log is None:
        what = "the lake has no checkpoint" if latest is None else (
            f"the latest checkpoint #{latest.sequence} predates log trees and has no C2SP note")
        return [error(NOT_WITNESSED, f"{what}, so no witness can have cosigned it: run the materializer with "
                      "--witness to write and cosign one")], "not witnessed: no checkpoint note"
    findings: list[Finding] = []
    origin, size = latest.log.origin, latest.log.tree_size
    where = f"checkpoint #{latest.sequence} (log {origin}, {size} events)"
    try:
        note = read_note(lake_root, latest.sequence)
    except NoteError as exc:
        return [error(NOTE_INVALID, f"{where}: its note is unreadable: {exc}")], "not witnessed: note unreadable"
    if note is None:
        return [error(NOTE_INVALID, f"{where}: its note file {latest.sequence:012d}.note is gone, and with it "
                      "every cosignature: removed from the lake")], "not witnessed: no note"
    if note.text != latest.log.head().text():
        return [error(NOTE_INVALID, f"{where}: its note is of another tree ({note.text.splitlines()[1:2]} "
                      "events): the note or the checkpoint was replaced")], "not witnessed: note does not match"
    if key is not None:
        try:
            signed = verified_by(note, log_key(origin, key)) is not None
        except NoteError:
            signed = False
        if not signed:
            findings.append(error(NOTE_INVALID, f"{where}: its note is not signed by the trusted public key"))
    valid: list[str] = []
    for witness in policy.keys:
        try:
            cosig = verified_by(note, witness)
        except NoteError:
            findings.append(error(NOT_WITNESSED, f"{where}: the cosignature of {witness.name} on its note does "
                                  "not verify: altered or forged"))
            continue
        if cosig is not None:
            valid.append(f"{witness.name} at {_when(cosignature_time(cosig))}")
    if policy.keys and len(valid) < policy.min_witnesses:
        findings.append(error(NOT_WITNESSED, (
            f"{where} carries {len(valid)} valid cosignature(s) of the {policy.min_witnesses} required from the "
            f"given witness keys ({', '.join(w.name for w in policy.keys)}): it was never shown to them, or they "
            "refused it because it does not extend what they cosigned (a rewritten, re-signed or forked log)")))
    summary = (f"latest checkpoint #{latest.sequence} cosigned by {len(valid)} of {len(policy.keys)} given witness "
               f"keys (at least {policy.min_witnesses} required)" + (f": {'; '.join(valid)}" if valid else ""))
    for endpoint in policy.online:
        finding, seen = _against_online(endpoint, chain, latest, key)
        if finding is not None:
            findings.append(finding)
        summary += f"; {endpoint.key.name}: {seen}"
    return findings, summary


def _against_online(
    witness: WitnessEndpoint, chain: list[Checkpoint], latest: Checkpoint, key: Ed25519PublicKey | None
) -> tuple[Finding | None, str]:
    """Ask a witness for the latest checkpoint it cosigned of this log; the lake's chain must hold it."""
    assert latest.log is not None
    origin = latest.log.origin

    def error(kind: str, message: str) -> tuple[Finding, str]:
        return Finding(kind, "error", f"witness {witness.key.name}: {message}", checkpoint=latest.sequence), "FAILED"

    url = f"{witness.url}/checkpoint?origin={urllib.parse.quote(origin, safe='')}"
    try:
        status, _type, text = http("GET", url)
    except IntegrityError as exc:
        return error(NOT_WITNESSED, f"cannot be asked for its latest checkpoint of {origin}: {exc}")
    if status != 200:
        return error(NOT_WITNESSED, f"has no cosigned checkpoint of {origin} to compare with "
                     f"(HTTP {status}: {text.strip()[:200]})")
    try:
        note = parse_note(text, f"latest checkpoint from {witness.url}")
        head = TreeHead.parse(note.text)
        cosig = verified_by(note, witness.key)
        if cosig is None:
            raise NoteError("it carries no cosignature by the given witness key")
        if key is not None and verified_by(note, log_key(origin, key)) is None:
            raise NoteError("it is not signed by the log's trusted key")
    except NoteError as exc:
        return error(NOT_WITNESSED, f"its latest checkpoint of {origin} cannot be trusted: {exc}")
    when = _when(cosignature_time(cosig))
    if head.size > latest.log.tree_size:
        return error(ROLLED_BACK, (
            f"cosigned {head.size} events of {origin} at {when}, but the lake's checkpoints cover only "
            f"{latest.log.tree_size} (latest #{latest.sequence}): the newest checkpoints were removed "
            "(rolled back)"))
    same = [c for c in chain if c.log is not None and c.log.origin == origin and c.log.tree_size == head.size]
    if not same or same[-1].log is None or bytes.fromhex(same[-1].log.root) != head.root:
        return error(ROLLED_BACK, (
            f"cosigned a tree of {head.size} events of {origin} at {when} that no checkpoint of the lake has: "
            "the lake's log was rewritten since (a fork)"))
    return None, f"its latest cosigned checkpoint ({head.size} events, {when}) is in the lake's chain"


def parse_witness_keys(values: Sequence[str], where: str = "--witness-key") -> tuple[NoteKey, ...]:
    """Witness keys given as vkeys, or as files holding one."""
    keys = []
    for value in values:
        text = value
        if "+" not in value or Path(value).is_file():
            try:
                text = Path(value).read_text("utf-8").strip()
            except OSError as exc:
                raise NoteError(f"{where}: {value!r} is neither a vkey nor a readable file ({exc.strerror})") from None
        keys.append(parse_vkey(text, expect=COSIGNATURE_V1, where=where))
    return tuple(keys)
