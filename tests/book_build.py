"""The book's HTML build, shared by tests/test_book.py and tests/test_browser.py.

``conftest.py`` runs it once per session (one pytest-xdist worker runs both files: they are
in the ``xdist_group`` "book").
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Build:
    returncode: int
    log: str
    html: Path  # <output>/_build/html


def build_book(out: Path) -> Build:
    """``jupyter-book build . --all -W -n --keep-going`` into ``out``, executing nothing."""
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(REPO)]
    proc = subprocess.run(
        [*cmd, "--all", "-W", "-n", "--keep-going", "--path-output", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=900,
    )
    return Build(proc.returncode, proc.stdout + proc.stderr, out / "_build" / "html")
