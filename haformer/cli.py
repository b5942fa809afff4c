"""HAFormer command line: profile, download CamVid, train, evaluate, predict, export.

``python -m haformer COMMAND``: one entry point, each command defined next to the code it runs.

Every module in :data:`COMMAND_MODULES` exposes ``add_cli(subparsers)``, which adds its own
sub-command(s) and sets ``func`` to the function that runs them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    "haformer.profile",  # summary, bench
    "haformer.data.cli",  # download
    "haformer.train",  # train
    "haformer.evaluate",  # evaluate, predict
    "haformer.export",  # export
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m haformer", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; a user's mistake (exit 2) or a failure of the environment (exit 1) is
    reported in one line, not a traceback."""
    from haformer.errors import EnvironmentFailure, UsageError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UsageError, EnvironmentFailure) as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
