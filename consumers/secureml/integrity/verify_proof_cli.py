"""``secureml-audit verify-proof``: check an inclusion or consistency proof with nothing but the public key."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from secureml.integrity.exceptions import IntegrityError, ProofError
from secureml.integrity.keys import key_id, load_public_key
from secureml.integrity.proofs import CONSISTENCY_FORMAT, verify_consistency_proof, verify_proof


def _format(text: str) -> object:
    try:
        raw = json.loads(text)
    except ValueError:
        return None
    return raw.get("format") if isinstance(raw, dict) else None

HELP = "check an inclusion or consistency proof with the public key alone"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the verify-proof options."""
    parser.add_argument("proof", help="proof file written by `secureml-audit prove` ('-' reads stdin)")
    parser.add_argument("--public-key", required=True, type=Path,
                        help="PEM public key of the materializer that signed the checkpoints")
    parser.add_argument("--event-id", help="also require the proof to be about this event")


def run(args: argparse.Namespace) -> int:
    """0 when the proof holds, 1 (with the reason) when it does not."""
    try:
        text = sys.stdin.read() if args.proof == "-" else Path(args.proof).read_text(encoding="utf-8")
    except OSError as exc:
        raise IntegrityError(f"cannot read the proof {args.proof}: {exc.strerror}") from None
    key = load_public_key(args.public_key)
    try:
        if _format(text) == CONSISTENCY_FORMAT:
            if args.event_id:
                raise ProofError("--event-id: this is a consistency proof, which is about no single event")
            old, new = verify_consistency_proof(text, key)
            print(f"VALID: the log tree of {new.size} events of {new.origin} extends the one of {old.size} events "
                  f"(nothing in them was changed or removed); both checkpoints signed by key {key_id(key)}")
            return 0
        checkpoint = verify_proof(text, key, event_id=args.event_id)
    except ProofError as exc:
        print(f"INVALID: {exc}")
        return 1
    print(f"VALID: the event is covered by checkpoint #{checkpoint.sequence} of {checkpoint.created_at}, "
          f"signed by key {checkpoint.key_id}")
    return 0
