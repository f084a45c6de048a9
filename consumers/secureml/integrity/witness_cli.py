"""``secureml-audit witness``: run a witness that cosigns a log's checkpoints only when the log only grew."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from secureml.audit.config import DEFAULT_TOPIC, AuditConfig, resolve_config
from secureml.integrity.exceptions import IntegrityError, WitnessError
from secureml.integrity.keys import load_signing_key
from secureml.integrity.notes import COSIGNATURE_V1, ED25519, NoteKey, parse_vkey
from secureml.integrity.topicwitness import witness_topic
from secureml.integrity.witness import Witness, WitnessState, serve

HELP = "run a witness that cosigns checkpoints after checking they extend what it cosigned"


def _listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT")
    return host, int(port)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the witness options."""
    parser.description = ("Run a witness: a small service another party runs with its own key and state. It "
                          "cosigns a log's checkpoint only after checking a consistency proof that the log only "
                          "grew since the last one it cosigned, and refuses forks and rollbacks (C2SP "
                          "tlog-witness over HTTP, or from the <topic>-checkpoints topic).")
    parser.add_argument("--name", required=True, help="the witness's key name, a schema-less URL such as "
                        "witness.example.org/w1")
    parser.add_argument("--key", required=True, type=Path, help="the witness's own Ed25519 private key (PEM, "
                        "owner-only; create it with `secureml-audit keygen --key PATH`), never the log's")
    parser.add_argument("--state", type=Path, help="directory of the witness's state (the latest cosigned "
                        "checkpoint of every log); required unless --print-vkey")
    parser.add_argument("--log", action="append", default=[], metavar="VKEY",
                        help="a log to witness, by its note vkey (<origin>+<key id>+<key>; `secureml-audit keygen` "
                        "prints it); repeatable")
    parser.add_argument("--listen", type=_listen, default=("127.0.0.1", 8443), metavar="HOST:PORT",
                        help="address to serve on (default 127.0.0.1:8443; port 0 picks a free one)")
    parser.add_argument("--prefix", default="", help="URL path prefix of the endpoints (default: none)")
    parser.add_argument("--print-vkey", action="store_true", help="print the witness's cosignature vkey and exit")
    parser.add_argument("--bootstrap-servers", help="also cosign the checkpoints published to <topic>-checkpoints on "
                        "this Kafka cluster, publishing cosignatures to <topic>-cosignatures")
    parser.add_argument("--topic", help=f"the log's event topic (default: $SECUREML_AUDIT_TOPIC or {DEFAULT_TOPIC})")


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; or print the vkey."""
    key = load_signing_key(args.key.expanduser().absolute())
    try:
        cosigner = NoteKey(args.name, key.public_key(), COSIGNATURE_V1)
    except IntegrityError as exc:
        print(f"secureml-audit witness: --name: {exc}", file=sys.stderr)
        return 2
    if args.print_vkey:
        print(cosigner.vkey())
        return 0
    try:
        if args.state is None:
            raise WitnessError("--state is required: the witness must remember what it cosigned across restarts")
        if not args.log:
            raise WitnessError("--log is required: name at least one log (its note vkey) to witness")
        logs = [parse_vkey(vkey, expect=ED25519, where="--log") for vkey in args.log]
    except IntegrityError as exc:
        print(f"secureml-audit witness: {exc}", file=sys.stderr)
        return 2
    witness = Witness(args.name, key, logs, WitnessState(args.state.expanduser().absolute()))
    host, port = args.listen
    server = serve(witness, host, port, prefix=args.prefix)
    port = server.server_address[1]
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="witness-http")
    thread.start()
    reader = None
    if args.bootstrap_servers:
        config = resolve_config(bootstrap_servers=args.bootstrap_servers, topic=args.topic)
        reader = threading.Thread(target=_read_topic, args=(witness, config, stop), daemon=True, name="witness-kafka")
        reader.start()
    print(f"witness {cosigner.name} listening on http://{host}:{port}{args.prefix.rstrip('/')} for "
          f"{', '.join(sorted(witness.logs))}; vkey {cosigner.vkey()}", file=sys.stderr, flush=True)
    stop.wait()
    server.shutdown()
    server.server_close()
    thread.join()
    if reader is not None:
        reader.join()
    return 0


def _read_topic(witness: Witness, config: AuditConfig, stop: threading.Event) -> None:
    try:
        witness_topic(witness, config, stop)
    except Exception as exc:  # noqa: BLE001 - the HTTP side goes on; say why the topic side stopped
        print(f"secureml-audit witness: stopped reading {config.topic}-checkpoints: {exc}", file=sys.stderr, flush=True)
