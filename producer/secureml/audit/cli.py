"""The ``secureml-audit`` command: a dispatcher; every subcommand is a plug-in.

Subcommands are registered as entry points of the group ``secureml_audit.commands`` (see
pyproject.toml); each names a module with ``HELP``, ``configure_parser(parser)`` and
``run(args) -> int``. The producer side so knows none of the consumer modules it dispatches to.
"""

from __future__ import annotations

import argparse
import ast
import atexit
import importlib
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

from secureml.audit.exceptions import AuditConfigError, AuditError, AuditValidationError

COMMANDS_GROUP = "secureml_audit.commands"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@cache
def _commands() -> dict[str, str]:
    """Subcommand name -> module, from the installed entry points."""
    return {ep.name: ep.value for ep in sorted(entry_points(group=COMMANDS_GROUP), key=lambda ep: ep.name)}


def _help_of(module_name: str) -> str | None:
    """A command module's one-line ``HELP``, read from its source without importing it.

    Importing a command imports its package (pyarrow, duckdb, reportlab, ...): `--help` and
    every other subcommand would pay for all of them. Falls back to importing the module when
    its source cannot be found or its HELP is not a plain string literal.
    """
    import secureml  # the namespace package: its portions are the producer and consumer trees

    relative = Path(*module_name.split(".")[1:]).with_suffix(".py")
    for root in secureml.__path__:
        source = Path(root) / relative
        if source.is_file():
            found = _HELP_LINE.search(source.read_text(encoding="utf-8"))
            if found is not None:
                try:
                    value = ast.literal_eval(found.group(1))
                except (ValueError, SyntaxError):
                    break
                if isinstance(value, str):
                    return value
            break
    try:
        return getattr(importlib.import_module(module_name), "HELP", None)
    except ModuleNotFoundError as exc:
        return f"(not available: {exc.name} is missing)"


_HELP_LINE = re.compile(r"^HELP = (.+)$", re.MULTILINE)


def _chosen(argv: Sequence[str]) -> str | None:
    """The subcommand named on a command line (the first argument that is not an option)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser: every subcommand listed, ``command`` (or, with None, each) fully configured.

    Only the module of the subcommand that runs is imported, so ``secureml-audit --help`` and
    each subcommand start without loading what the others use.
    """
    parser = argparse.ArgumentParser(prog="secureml-audit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module_name in _commands().items():
        if command is not None and name != command:
            sub.add_parser(name, help=_help_of(module_name))
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            missing = sub.add_parser(name, help=f"(not available: {exc.name} is missing)")
            missing.set_defaults(handler=_missing(name, module_name, exc))
            continue
        command_parser = sub.add_parser(name, help=getattr(module, "HELP", None))
        module.configure_parser(command_parser)
        command_parser.set_defaults(handler=_handler(module))
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
    arguments = list(sys.argv[1:] if argv is None else argv)
    chosen = _chosen(arguments)
    # With no (or an unknown) subcommand, the parser only lists them: nothing is imported.
    args = build_parser(chosen if chosen in _commands() else "").parse_args(arguments)
    try:
        return int(args.handler(args))
    except (AuditValidationError, AuditConfigError) as exc:  # bad input: what to change is in the message
        _stderr(f"secureml-audit {args.command}: {exc}")
        return 2
    except AuditError as exc:
        _stderr(f"secureml-audit {args.command}: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _reader_went_away()


def _reader_went_away() -> int:
    """The output's reader closed it (``query | head``): stop quietly, as a command killed by SIGPIPE would."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # so the final flush at exit does not fail once more
    os.close(devnull)
    return 141


def console() -> None:
    """The console script: run, finish the Python-level exit work, then leave without native teardown.

    delta-rs and pyarrow can abort the interpreter while their thread pools are torn down at
    exit (``terminate called without an active exception``, delta-rs#2184, arrow#34314), after
    all the work is done, turning a success into exit status 134. So the exit functions run here
    (transports flush and close), output is flushed, and the process ends with the real status.
    """
    status = main()
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        status = _reader_went_away()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    console()
