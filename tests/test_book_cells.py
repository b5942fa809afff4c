"""What a reader copies out of the book works on its own, and shows nothing of our machines.

- Every code cell that defines a function or class runs alone, in a fresh namespace of a fresh
  interpreter (smoke mode, one thread): it imports what it uses and needs no variable of an
  earlier cell.
- No notebook source or output holds an absolute path of the machine that executed it.
"""

from __future__ import annotations

import re

import nbformat
import pytest
from book_cells import BOOK, CHAPTERS, SETUP_TAG, defining_cells, run_alone

NAMES = [c.removeprefix("book/") for c in CHAPTERS]


@pytest.mark.parametrize("chapter", NAMES)
def test_defining_cells_run_alone(chapter: str) -> None:
    cells = defining_cells(chapter)
    if not cells:
        pytest.skip(f"{chapter} defines no function or class")
    proc = run_alone(cells)
    failure = proc.stderr[proc.stderr.find("FAILED") :] if "FAILED" in proc.stderr else proc.stderr
    assert proc.returncode == 0, (
        "a cell that defines something does not run alone (it must import what it uses and "
        f"define the constants it needs):\n{failure[-3000:]}"
    )


# Absolute paths of a machine: POSIX home, root, temporary and work folders, macOS users,
# Windows drives. Colab's own paths (/content/...) are instructions for the reader, not ours.
MACHINE_PATH = re.compile(
    r"(?<![\w.~-])(/work/|/root/|/home/|/tmp/|/Users/|/private/var/|/var/folders/|[A-Z]:\\)"
)


def _texts(cell: nbformat.NotebookNode) -> list[tuple[str, str]]:
    """(where, text) of a cell's source and of every text in its outputs."""
    texts = [("source", cell.source)]
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            texts.append((f"{out.name} output", out.text))
        elif out.output_type == "error":
            texts.append(("error output", "\n".join(out.traceback)))
        else:
            for mime, data in out.get("data", {}).items():
                if mime.startswith("text/") or mime.endswith("+json"):
                    texts.append((f"{mime} output", str(data)))
    return texts


@pytest.mark.parametrize("chapter", NAMES)
def test_no_machine_path(chapter: str) -> None:
    nb = nbformat.read(BOOK / f"{chapter}.ipynb", as_version=4)
    found = []
    for i, cell in enumerate(nb.cells):
        if SETUP_TAG in cell.metadata.get("tags", []):
            continue  # generated; its /tmp is Colab's, where it runs
        for where, text in _texts(cell):
            for line in text.splitlines():
                if MACHINE_PATH.search(line):
                    found.append(f"cell {i} {where}: {line.strip()[:120]}")
    assert not found, "absolute paths of the executing machine:\n" + "\n".join(found)
