"""``secureml-audit ui``: serve the read-only audit explorer in the browser.

The web stack (Starlette, Jinja2, uvicorn) is the optional extra ``ui``; this module imports it
only when the command runs, so ``--help`` and the other commands work without it.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import stat
from pathlib import Path

from secureml.audit.config import existing_log_dir
from secureml.audit.exceptions import AuditConfigError, AuditValidationError

HELP = "serve the read-only audit explorer (operations, timelines, alerts, requests, integrity) in the browser"
TOKEN_ENV = "SECUREML_AUDIT_UI_TOKEN"
BASIC_AUTH_ENV = "SECUREML_AUDIT_UI_BASIC_AUTH_FILE"
UI_MODULES = ("starlette", "jinja2", "uvicorn")
log = logging.getLogger(__name__)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``secureml-audit ui``."""
    parser.description = (
        "Serve a read-only web explorer of the audit trail: operations with filters, one operation's timeline "
        "with its hash-chain status, alerts, data-subject request deadlines, integrity (verify, checkpoints, "
        "inclusion proofs), charts and report downloads. Every asset is served locally. A non-loopback --host "
        f"needs --token (or ${TOKEN_ENV}) or --basic-auth-file. Needs the extra: pip install 'secureml-audit[ui]'."
    )
    parser.add_argument("--log-dir", metavar="DIR",
                        help="the folder the audit trail logs to (default $SECUREML_AUDIT_LOG_DIR or "
                        "secureml_audit_logs)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default %(default)s: this machine only)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default %(default)s)")
    parser.add_argument("--token", help=f"require this bearer token (default ${TOKEN_ENV}); a browser opens "
                        "http://HOST:PORT/?token=TOKEN once")
    parser.add_argument("--basic-auth-file", metavar="FILE",
                        help=f"require HTTP basic auth with the 'user:password' line of this owner-only file "
                        f"(default ${BASIC_AUTH_ENV})")
    parser.add_argument("--public-key", metavar="PEM",
                        help="public key to check checkpoint signatures with on the integrity page (default: the "
                        "lake's own copy, with a warning)")
    parser.add_argument("--no-verify", action="store_true",
                        help="the integrity page lists checkpoints but does not run verify in the background "
                        "(for very large lakes; run `secureml-audit verify` instead)")
    parser.add_argument("--lake-uri", help="where the Delta table lives, e.g. s3://bucket/audit/events "
                        "(default: $SECUREML_AUDIT_LAKE_URI or LOG_DIR/lake/events)")


def missing_modules() -> list[str]:
    """The web stack's modules that are not installed."""
    return [name for name in UI_MODULES if importlib.util.find_spec(name) is None]


def basic_credentials(path: str | os.PathLike[str]) -> tuple[str, str]:
    """(user, password) from the one 'user:password' line of an owner-only file."""
    where = "secureml-audit ui"
    file = Path(path)
    try:
        mode = file.stat().st_mode
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise AuditValidationError("basic-auth-file", f"cannot read {file}: {exc.strerror}", where=where) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AuditValidationError("basic-auth-file", f"{file} must be readable by its owner only "
                                   f"(chmod 600 {file})", where=where)
    user, colon, password = text.strip().partition(":")
    if not colon or not user or not password or "\n" in text.strip():
        raise AuditValidationError("basic-auth-file", f"{file} must hold one line 'user:password'", where=where)
    return user, password


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted."""
    where = "secureml-audit ui"
    if not 0 < args.port < 65536:
        raise AuditValidationError("port", f"must be from 1 to 65535, got {args.port}", where=where)
    missing = missing_modules()
    if missing:
        raise AuditConfigError(f"the explorer needs {', '.join(missing)}: pip install 'secureml-audit[ui]'")
    if args.lake_uri:
        os.environ["SECUREML_AUDIT_LAKE_URI"] = args.lake_uri  # read by the query layer and the verifier alike
    log_dir = existing_log_dir(args.log_dir, "ui")

    from secureml.ui.security import Access, is_loopback

    token = args.token or os.environ.get(TOKEN_ENV) or None
    basic_file = args.basic_auth_file or os.environ.get(BASIC_AUTH_ENV)
    user, password = basic_credentials(basic_file) if basic_file else (None, None)
    access = Access(token=token, basic_user=user, basic_password=password)
    if not is_loopback(args.host) and not access.required:
        raise AuditConfigError(
            f"refusing to serve the audit trail on {args.host} without a credential: pass --token (or set "
            f"${TOKEN_ENV}) or --basic-auth-file, or listen on 127.0.0.1"
        )

    import uvicorn

    from secureml.ui.app import create_app

    app = create_app(log_dir, access=access, public_key=args.public_key, verify=not args.no_verify)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    log.info("audit explorer of %s at http://%s:%d/%s (read-only; Ctrl-C stops)", log_dir, shown, args.port,
             "?token=..." if token else "")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", server_header=False)
    return 0
