"""``secureml-audit verify-proof``: check an inclusion or consistency proof with nothing but the public key."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from secureml.integrity.exceptions import IntegrityError, NoteError, ProofError, WitnessError
from secureml.integrity.keys import key_id, load_public_key
from secureml.integrity.notes import NoteKey, parse_note, verified_by
from secureml.integrity.proofs import CONSISTENCY_FORMAT, verify_consistency_proof, verify_proof
from secureml.integrity.witnessed import parse_witness_keys


def _cosigners(note: str, witnesses: tuple[NoteKey, ...]) -> list[str]:
    """Names of the witnesses whose valid cosignature the note carries."""
    parsed = parse_note(note)
    names = []
    for witness in witnesses:
        try:
            if verified_by(parsed, witness) is not None:
                names.append(witness.name)
        except NoteError as exc:
            raise ProofError(f"the NEW checkpoint's cosignature by {witness.name} does not verify: {exc}") from None
    return names


def _format(text: str) -> object:
    try:
        raw = json.loads(text)
    except ValueError:
        return None
    return raw.get("format") if isinstance(raw, dict) else None

HELP = "check an inclusion or consistency proof with the public key alone"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the verify-proof options."""
    parser.description = ("Check a proof written by `secureml-audit prove` with nothing but the public key (and "
                          "the witnesses' keys): no lake, no network.")
    parser.add_argument("proof", help="proof file written by `secureml-audit prove` ('-' reads stdin)")
    parser.add_argument("--public-key", required=True, type=Path,
                        help="PEM public key of the materializer that signed the checkpoints")
    parser.add_argument("--event-id", help="also require the proof to be about this event")
    parser.add_argument("--witness-key", action="append", default=[], metavar="VKEY|FILE",
                        help="for a consistency proof: also require the NEW checkpoint to carry this witness's valid "
                        "cosignature (repeatable; see --min-witnesses)")
    parser.add_argument("--min-witnesses", type=int, metavar="N", help="how many --witness-key cosignatures the NEW "
                        "checkpoint needs (default 1)")


def run(args: argparse.Namespace) -> int:
    """0 when the proof holds, 1 (with the reason) when it does not."""
    try:
        text = sys.stdin.read() if args.proof == "-" else Path(args.proof).read_text(encoding="utf-8")
    except OSError as exc:
        raise IntegrityError(f"cannot read the proof {args.proof}: {exc.strerror}") from None
    try:
        witnesses = parse_witness_keys(args.witness_key)
        minimum = 1 if args.min_witnesses is None else args.min_witnesses
        if (args.min_witnesses is not None or witnesses) and not 1 <= minimum <= len(witnesses):
            raise WitnessError(f"--min-witnesses: {minimum} must be between 1 and the {len(witnesses)} --witness-key "
                               "given")
    except (NoteError, WitnessError) as exc:
        print(f"secureml-audit verify-proof: {exc}", file=sys.stderr)
        return 2
    key = load_public_key(args.public_key)
    try:
        if _format(text) == CONSISTENCY_FORMAT:
            if args.event_id:
                raise ProofError("--event-id: this is a consistency proof, which is about no single event")
            old, new = verify_consistency_proof(text, key)
            cosigned = _cosigners(json.loads(text)["new"], witnesses)
            if witnesses and len(cosigned) < minimum:
                raise ProofError(f"the NEW checkpoint carries {len(cosigned)} valid cosignature(s) of the {minimum} "
                                 "required from the given witness keys")
            print(f"VALID: the log tree of {new.size} events of {new.origin} extends the one of {old.size} events "
                  f"(nothing in them was changed or removed); both checkpoints signed by key {key_id(key)}"
                  + (f"; NEW cosigned by {', '.join(cosigned)}" if witnesses else ""))
            return 0
        if witnesses:
            print("secureml-audit verify-proof: --witness-key applies to consistency proofs only", file=sys.stderr)
            return 2
        checkpoint = verify_proof(text, key, event_id=args.event_id)
    except ProofError as exc:
        print(f"INVALID: {exc}")
        return 1
    print(f"VALID: the event is covered by checkpoint #{checkpoint.sequence} of {checkpoint.created_at}, "
          f"signed by key {checkpoint.key_id}")
    return 0
