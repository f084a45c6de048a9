"""The ``secureml-audit`` command: a dispatcher; every subcommand is a plug-in.

Subcommands are registered as entry points of the group ``secureml_audit.commands`` (see
pyproject.toml); each names a module with ``HELP``, ``configure_parser(parser)`` and
``run(args) -> int``. The producer side so knows none of the consumer modules it dispatches to.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from types import ModuleType

from secureml.audit.exceptions import AuditError

COMMANDS_GROUP = "secureml_audit.commands"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _commands() -> dict[str, str]:
    """Subcommand name -> module, from the installed entry points."""
    return {ep.name: ep.value for ep in sorted(entry_points(group=COMMANDS_GROUP), key=lambda ep: ep.name)}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="secureml-audit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module_name in _commands().items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            missing = sub.add_parser(name, help=f"(not available: {exc.name} is missing)")
            missing.set_defaults(handler=_missing(name, module_name, exc))
            continue
        command = sub.add_parser(name, help=getattr(module, "HELP", None))
        module.configure_parser(command)
        command.set_defaults(handler=_handler(module))
    return parser


def _handler(module: ModuleType) -> Callable[[argparse.Namespace], int]:
    return lambda args: int(module.run(args))


def _missing(name: str, module: str, exc: ModuleNotFoundError) -> Callable[[argparse.Namespace], int]:
    def fail(_args: argparse.Namespace) -> int:
        _stderr(f"secureml-audit {name}: not available in this installation ({module} needs {exc.name}); "
                "reinstall secureml-audit")
        return 2

    return fail


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns its exit status."""
    # The libraries' notes (a signing key created, a lake converted, ...) reach the user as log lines.
    logging.basicConfig(level=logging.INFO, format="secureml-audit: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except AuditError as exc:
        _stderr(f"secureml-audit {args.command}: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130


def console() -> None:
    """The console script: run, finish the Python-level exit work, then leave without native teardown.

    delta-rs and pyarrow can abort the interpreter while their thread pools are torn down at
    exit (``terminate called without an active exception``, delta-rs#2184, arrow#34314), after
    all the work is done, turning a success into exit status 134. So the exit functions run here
    (transports flush and close), output is flushed, and the process ends with the real status.
    """
    status = main()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    console()
