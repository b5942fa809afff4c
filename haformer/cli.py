"""HAFormer command line: profile, download CamVid, train, evaluate, predict, export.

``haformer COMMAND`` (or ``python -m haformer COMMAND``): one entry point, each command
defined next to the code it runs. Every module in :data:`COMMAND_MODULES` exposes
``add_cli(subparsers)``, which adds its own sub-command(s) and sets ``func`` to the function
that runs them.

The error policy lives here, once: a user's mistake (:class:`~haformer.errors.UsageError`,
bad arguments included) ends in one line and exit code 2, a failure of the environment
(:class:`~haformer.errors.EnvironmentFailure`, or an OSError such as a full disk) in one line
and exit code 1, Ctrl-C in one line and exit code 130. Anything else is a bug and keeps its
traceback; ``--debug`` shows the traceback for everything.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from typing import NoReturn

COMMAND_MODULES = (
    "haformer.profile",  # summary, bench
    "haformer.data.cli",  # download
    "haformer.train",  # train
    "haformer.evaluate",  # evaluate, predict
    "haformer.export",  # export
)
PROG = "haformer"
INTERRUPTED = 130


class Parser(argparse.ArgumentParser):
    """argparse, with a bad argument reported in one line (and exit code 2) instead of the
    usage block: ``error: haformer train: argument --epochs: invalid int value: 'x'``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    import haformer

    parser = Parser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument(
        "--version", action="version", version=f"{PROG} {haformer.__version__}{_versions()}"
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of every error (for bug reports)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_cli(sub)
    for command in sub.choices.values():
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
        _alias(command, "--root", "--data-root")
    return parser


def _versions() -> str:
    import timm
    import torch
    import torchvision

    versions = {"torch": torch, "torchvision": torchvision, "timm": timm}
    return " (" + ", ".join(f"{name} {mod.__version__}" for name, mod in versions.items()) + ")"


def _alias(parser: argparse.ArgumentParser, existing: str, name: str) -> None:
    """Accept ``name`` for the option ``existing`` (one flag name per concept everywhere)."""
    actions = parser._option_string_actions  # argparse keeps no public map
    if existing in actions and name not in actions:
        action = actions[existing]
        action.option_strings.insert(0, name)
        actions[name] = action


def main(argv: list[str] | None = None) -> int:
    """Run one command and return its exit code (0, 1, 2 or 130): see the module docstring."""
    from haformer.errors import EnvironmentFailure, UsageError
    from haformer.utils import ENVIRONMENT_ERRNOS

    args = build_parser().parse_args(argv)
    if args.debug:
        return int(args.func(args) or 0)
    try:
        return int(args.func(args) or 0)
    except (UsageError, EnvironmentFailure) as error:
        return _report(_message(error), error.exit_code)
    except OSError as error:
        if error.errno not in ENVIRONMENT_ERRNOS:
            raise
        return _report(str(error), EnvironmentFailure.exit_code)
    except KeyboardInterrupt as error:
        return _report(str(error) or "interrupted", INTERRUPTED, prefix="")


def _report(message: str, code: int, prefix: str = "error: ") -> int:
    print(f"{prefix}{message}", file=sys.stderr)
    return code


_WORKER = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.\nOriginal Traceback")


def _message(error: BaseException) -> str:
    """``str(error)``; for an error re-raised from a DataLoader worker, the worker's own
    message instead of the traceback text torch wraps it in."""
    text = str(error)
    if not _WORKER.match(text):
        return text
    lines = text.splitlines()
    qualified = f"{type(error).__module__}.{type(error).__qualname__}: "
    for i, line in enumerate(lines):
        if line.startswith((qualified, f"{type(error).__qualname__}: ")):
            first = line.split(": ", 1)[1]
            return "\n".join([first, *lines[i + 1 :]]).strip() + " (in a DataLoader worker)"
    return lines[-1]


if __name__ == "__main__":
    sys.exit(main())
