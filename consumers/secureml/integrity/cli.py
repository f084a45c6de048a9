"""``secureml-audit verify``: check a lake's hash chains and signed checkpoints; exit 0 only when intact."""

from __future__ import annotations

import argparse
import json
import sys

from secureml.integrity.cosigning import parse_witnesses
from secureml.integrity.exceptions import NoteError, WitnessError
from secureml.integrity.result import VerificationResult
from secureml.integrity.verifier import verify
from secureml.integrity.witnessed import WitnessPolicy, parse_witness_keys
from secureml.progress import Progress

SHOWN_FINDINGS = 50


HELP = "verify hash chains and signed checkpoints of a lake"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the verify options."""
    parser.description = ("Check every event's hash, every operation's chain and every signed checkpoint of a "
                          "lake (and, with --witness-key, the witnesses' cosignatures); exit 0 only when intact.")
    parser.add_argument("--log-dir", help="directory that holds lake/ (default: $SECUREML_AUDIT_LOG_DIR or "
                        "secureml_audit_logs)")
    parser.add_argument("--public-key", help="PEM public key of the materializer that signed the checkpoints "
                        "(default: the lake's own copy, which proves nothing against whoever could rewrite the lake)")
    parser.add_argument("--operation-id", help="verify this operation only")
    parser.add_argument("--as-of", type=lambda v: int(v) if v.isdigit() else v, metavar="VERSION|TIME",
                        help="verify the lake as it was at a Delta version (a number) or a time (ISO 8601)")
    parser.add_argument("--witness-key", action="append", default=[], metavar="VKEY|FILE",
                        help="a witness's cosignature vkey (or a file holding it): the latest checkpoint must carry "
                        "its valid cosignature; repeatable")
    parser.add_argument("--min-witnesses", type=int, metavar="N",
                        help="how many of the --witness-key witnesses must have cosigned (default 1)")
    parser.add_argument("--witness", nargs=2, action="append", default=[], metavar=("URL", "VKEY"),
                        help="also ask this witness for the latest checkpoint it cosigned (catches a lake whose "
                        "newest checkpoints were removed); repeatable")
    parser.add_argument("--allow-unsigned", action="store_true",
                        help="exit 0 for intact hash chains even when no signed checkpoint covers them")
    parser.add_argument("--progress", action="store_true",
                        help="show progress on stderr (about once a second) even when it is not a terminal")
    parser.add_argument("--format", choices=["text", "json"], default="text",
                        help="text (default) or json: the whole result, for scripts and dashboards")


def render(result: VerificationResult) -> str:
    """The result as text: the verdict, what is wrong and where, then the counts."""
    summary = result.summary()
    lines = [
        f"{result.verdict.upper()}: {result.log_dir}: {result.events:,} events, "
        f"{summary['operations']:,} operations, {summary['checkpoints']} checkpoints "
        f"(latest {summary['latest_checkpoint']}), verified in {result.seconds:.1f} s",
        f"public key: {result.public_key}",
        f"witnesses: {result.witnessed}",
    ]
    lines += [f"retention: {note}" for note in result.retention]
    findings = result.errors + result.warnings
    for finding in findings[:SHOWN_FINDINGS]:
        where = f" [{', '.join(finding.files)}]" if finding.files else ""
        lines.append(f"  {finding.severity.upper():7} {finding.kind:24} {finding.message}{where}")
    if len(findings) > SHOWN_FINDINGS:
        lines.append(f"  ... and {len(findings) - SHOWN_FINDINGS} more (--format json lists them all)")
    lines.append(
        f"operations: {summary['operations'] - summary['operations_failed']:,} intact, "
        f"{summary['operations_failed']:,} failed, {summary['operations_not_closed']:,} never closed; "
        f"checkpoints: {summary['checkpoints'] - summary['checkpoints_failed']} intact, "
        f"{summary['checkpoints_failed']} failed; events not yet signed: {summary['events_not_covered']:,}; "
        f"subjects erased: {summary['subjects_erased']:,} (their values are shredded, their events intact)"
    )
    return "\n".join(lines)


def witness_policy(args: argparse.Namespace) -> WitnessPolicy:
    """The witness options as a policy; NoteError/WitnessError naming the option and the rule."""
    keys = parse_witness_keys(args.witness_key)
    minimum = 1 if args.min_witnesses is None else args.min_witnesses
    if args.min_witnesses is not None and not keys:
        raise WitnessError("--min-witnesses: needs --witness-key (the keys whose cosignatures count)")
    if not 1 <= minimum <= max(len(keys), 1):
        raise WitnessError(f"--min-witnesses: {minimum} must be between 1 and the {len(keys)} --witness-key given")
    online = tuple(parse_witnesses([token for pair in args.witness for token in pair]))
    return WitnessPolicy(keys, minimum, online)


def run(args: argparse.Namespace) -> int:
    """Verify and print; 0 when intact, 1 when anything is wrong, 2 for bad options."""
    try:
        policy = witness_policy(args)
    except (NoteError, WitnessError) as exc:
        print(f"secureml-audit verify: {exc}", file=sys.stderr)
        return 2
    progress = Progress("verify", True if args.progress else None)  # on a terminal, or when asked
    result = verify(args.log_dir, args.public_key, args.operation_id, progress, as_of=args.as_of, witnesses=policy)
    if args.format == "json":
        json.dump(result.to_dict(), sys.stdout, indent=2)
        print()
    else:
        print(render(result))
    if result.ok and not result.signed and result.events and not args.allow_unsigned:
        print("secureml-audit verify: NOT SIGNED: no signed checkpoint covers these events, so a consistent rewrite "
              "or a deleted operation would go unnoticed. Give the materializer a signing key (`secureml-audit "
              "keygen`), or pass --allow-unsigned to accept intact chains alone", file=sys.stderr)
        return 1
    return 0 if result.ok else 1
