"""``secureml-audit prove``: print an inclusion proof of an event, or a consistency proof that the log only grew."""

from __future__ import annotations

import argparse
import json
import sys

from secureml.integrity.proofs import prove, prove_consistency

HELP = "print an inclusion proof of an event, or a consistency proof between two checkpoints"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the prove options."""
    parser.description = ("Print a proof that an event is covered by a signed checkpoint (an inclusion proof), or "
                          "with --consistency OLD NEW that the lake's log only grew between two checkpoints; "
                          "check either with verify-proof and the public key alone.")
    parser.add_argument("--log-dir", help="directory that holds lake/ (default: $SECUREML_AUDIT_LOG_DIR or "
                        "secureml_audit_logs)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--event-id", help="the event to prove, e.g. <operation_id>:<seq>")
    which.add_argument("--consistency", nargs=2, metavar=("OLD", "NEW"),
                       help="prove the log tree of checkpoint NEW extends that of OLD; each a checkpoint number, "
                       "'latest', or a saved C2SP checkpoint note file")
    parser.add_argument("--output", help="write the proof to this file instead of stdout")


def run(args: argparse.Namespace) -> int:
    """Write the proof as JSON."""
    proof = prove(args.log_dir, args.event_id) if args.event_id else prove_consistency(args.log_dir, *args.consistency)
    text = json.dumps(proof, indent=2, sort_keys=True) + "\n"
    what = args.event_id or "consistency {} -> {}".format(*args.consistency)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"proof of {what} written to {args.output}; check it with: secureml-audit verify-proof "
              f"{args.output} --public-key <public key>", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
