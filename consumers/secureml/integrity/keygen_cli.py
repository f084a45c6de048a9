"""``secureml-audit keygen``: create the Ed25519 key pair that signs the lake's checkpoints."""

from __future__ import annotations

import argparse
from pathlib import Path

from secureml.integrity.keys import SIGNING_KEY_ENV, default_key_path, generate_key, key_id, public_key_path
from secureml.integrity.logtree import ORIGIN_ENV, default_origin
from secureml.integrity.treehead import log_key

HELP = "create the key pair that signs the lake's checkpoints"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the keygen options."""
    parser.description = ("Create the Ed25519 key pair that signs the lake's checkpoints, outside the log "
                          "directory, owner-only; prints where the public key is and the log's vkey for witnesses.")
    parser.add_argument("--key", type=Path, help=f"private key file to create (default: ${SIGNING_KEY_ENV} or "
                        "~/.config/secureml-audit/keys/signing_key.pem); keep it outside the lake")
    parser.add_argument("--force", action="store_true", help="replace an existing key (old checkpoints then "
                        "verify only with the old public key)")


def run(args: argparse.Namespace) -> int:
    """Create the key pair and say where it is and what to do with it."""
    path = (args.key or default_key_path()).expanduser().absolute()
    key = generate_key(path, overwrite=args.force)
    print(f"private key: {path} (owner-only: keep it secret and outside the lake; the materializer reads it "
          f"from here{'' if args.key is None else f' when {SIGNING_KEY_ENV} points to it'})")
    print(f"public key:  {public_key_path(path)} (give it to auditors: "
          f"secureml-audit verify --public-key {public_key_path(path)})")
    print(f"key id:      {key_id(key.public_key())}")
    origin = default_origin(key_id(key.public_key()))
    print(f"log vkey:    {log_key(origin, key.public_key()).vkey()} (the note key of log {origin}, "
          f"from ${ORIGIN_ENV} or the key id: give it to witnesses: secureml-audit witness --log <vkey>)")
    return 0
