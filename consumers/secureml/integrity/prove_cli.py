"""``secureml-audit prove``: print a proof that an event is covered by a signed checkpoint."""

from __future__ import annotations

import argparse
import json
import sys

from secureml.integrity.proofs import prove

HELP = "print a proof that an event is covered by a signed checkpoint"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the prove options."""
    parser.add_argument("--log-dir", help="directory that holds lake/ (default: $SECUREML_AUDIT_LOG_DIR or "
                        "secureml_audit_logs)")
    parser.add_argument("--event-id", required=True, help="the event to prove, e.g. <operation_id>:<seq>")
    parser.add_argument("--output", help="write the proof to this file instead of stdout")


def run(args: argparse.Namespace) -> int:
    """Write the proof as JSON."""
    text = json.dumps(prove(args.log_dir, args.event_id), indent=2, sort_keys=True) + "\n"
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"proof of {args.event_id} written to {args.output}; check it with: secureml-audit verify-proof "
              f"{args.output} --public-key <public key>", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
