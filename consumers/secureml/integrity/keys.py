"""Ed25519 signing keys: where they live, how they are made, loaded and named.

The private key is a PEM file readable by its owner only, outside the lake: the path in
``SECUREML_AUDIT_SIGNING_KEY``, else ``$XDG_CONFIG_HOME/secureml-audit/keys/signing_key.pem``
(``~/.config`` by default). The public key sits beside it as ``<name>.pub.pem``. A key is named
by its ``key_id``: the SHA-256 hex digest of its raw 32 public bytes.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from secureml.audit._fs import make_private_dir, write_atomically
from secureml.integrity.exceptions import SigningKeyError

SIGNING_KEY_ENV = "SECUREML_AUDIT_SIGNING_KEY"
KEY_FILE = "signing_key.pem"


def default_key_path() -> Path:
    """Where the signing key is looked for and created."""
    configured = os.environ.get(SIGNING_KEY_ENV)
    if configured:
        return Path(configured).expanduser().absolute()
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config_home / "secureml-audit" / "keys" / KEY_FILE


def public_key_path(private_path: Path) -> Path:
    """The public key file that belongs to a private key file."""
    return private_path.with_name(private_path.name.removesuffix(".pem") + ".pub.pem")


def public_pem(public_key: Ed25519PublicKey) -> bytes:
    """PEM (SubjectPublicKeyInfo) of a public key."""
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_id(public_key: Ed25519PublicKey) -> str:
    """Fingerprint of a public key: SHA-256 of its raw bytes, hex."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def generate_key(path: Path, *, overwrite: bool = False) -> Ed25519PrivateKey:
    """Create a key pair: the private key at ``path`` (owner-only), the public key beside it.

    Without ``overwrite`` an existing key is never replaced, even by a process racing this one.
    """
    key = Ed25519PrivateKey.generate()
    make_private_dir(path.parent)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        write_atomically(path, pem, 0o600, replace=overwrite)
    except FileExistsError:
        raise SigningKeyError(
            f"a signing key already exists at {path}; checkpoints signed with it verify only with its "
            "public key. Pass --force to replace it anyway, or choose another path."
        ) from None
    write_atomically(public_key_path(path), public_pem(key.public_key()), 0o644, replace=True)
    return key


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """The private key at ``path``; refuses a file that others can read."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except FileNotFoundError:
        raise SigningKeyError(
            f"no signing key at {path}: create one with `secureml-audit keygen` "
            f"(or point {SIGNING_KEY_ENV} at an existing key)"
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SigningKeyError(f"the signing key {path} is readable by others: run `chmod 600 {path}`")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"{path} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path} is not an Ed25519 key; create one with `secureml-audit keygen`")
    return key


def parse_public_key(pem: bytes, where: str) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM bytes (``where`` names them in errors)."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"{where} is not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"{where} is not an Ed25519 public key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """The public key in a PEM file."""
    try:
        return parse_public_key(Path(path).read_bytes(), str(path))
    except FileNotFoundError:
        raise SigningKeyError(f"no public key file at {path}") from None


def sign(key: Ed25519PrivateKey, message: bytes) -> str:
    """Ed25519 signature of a message, base64."""
    return base64.b64encode(key.sign(message)).decode()


def signature_valid(public_key: Ed25519PublicKey, message: bytes, signature: str) -> bool:
    """True when ``signature`` (base64) is the key's signature of the message."""
    try:
        public_key.verify(base64.b64decode(signature, validate=True), message)
    except (InvalidSignature, ValueError):
        return False
    return True
