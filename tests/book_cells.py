"""The book's code cells as a reader copies them: which define something, and running them alone.

Shared by tests/test_book_cells.py (every defining cell runs in a fresh namespace) and
tests/test_book_drift.py (the chapters' classes against the package's).
"""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat
import yaml

REPO = Path(__file__).resolve().parents[1]
BOOK = REPO / "book"
TOC = yaml.safe_load((REPO / "_toc.yml").read_text(encoding="utf-8"))
PAGES = [c["file"] for part in TOC["parts"] for c in part["chapters"]]  # "book/01_introduction"
CHAPTERS = [p for p in PAGES if (REPO / f"{p}.ipynb").is_file()]  # the notebooks only
SHARED_DATA = REPO.parent / "shared" / "data"

_spec = importlib.util.spec_from_file_location(
    "sync_repo_url", REPO / "scripts" / "sync_repo_url.py"
)
sync = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sync)
SETUP_TAG = sync.SETUP_TAG  # the generated Colab setup cell's tag


@dataclass(frozen=True)
class Cell:
    chapter: str  # "01_introduction"
    index: int  # position in the notebook (0 = the title cell)
    source: str
    defines: tuple[str, ...]  # top-level functions and classes

    def __str__(self) -> str:
        names = ", ".join(self.defines)
        return f"ch. {self.chapter}, cell {self.index} (defines {names})"


def defining_cells(chapter: str) -> list[Cell]:
    """The code cells of ``book/<chapter>.ipynb`` that define a function or class at top level."""
    nb = nbformat.read(BOOK / f"{chapter}.ipynb", as_version=4)
    cells = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        tree = ast.parse(cell.source)
        names = tuple(
            node.name
            for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        )
        if names:
            cells.append(Cell(chapter, i, cell.source, names))
    return cells


def definitions(cell: Cell) -> dict[str, object]:
    """Execute only the imports, UPPER_CASE constants, functions and classes of ``cell``.

    Imports inside a ``with warnings.catch_warnings():`` block (to silence an import-time
    warning) count as imports.

    What a reader gets by copying the cell's definitions without its demonstration code.
    Returns the resulting namespace.
    """
    tree = ast.parse(cell.source)

    def keep(node: ast.stmt) -> bool:
        if isinstance(
            node,
            ast.Import | ast.ImportFrom | ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef,
        ):
            return True
        if isinstance(node, ast.With):  # with warnings.catch_warnings(): filters and imports
            return all(isinstance(n, ast.Import | ast.ImportFrom | ast.Expr) for n in node.body)
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            return all(isinstance(t, ast.Name) and t.id.isupper() for t in targets)
        return False

    module = ast.Module(body=[n for n in tree.body if keep(n)], type_ignores=[])
    namespace: dict[str, object] = {"__name__": f"book_{cell.chapter}"}
    exec(compile(module, f"<{cell}>", "exec"), namespace)  # noqa: S102 (the book's own code)
    return namespace


def defined(chapter: str, name: str) -> object:
    """The function or class ``name`` as the cell of ``chapter`` that defines it makes it."""
    cells = [cell for cell in defining_cells(chapter) if name in cell.defines]
    if not cells:
        raise LookupError(f"no code cell of book/{chapter}.ipynb defines {name!r}")
    return definitions(cells[-1])[name]


# --- running cells alone ---------------------------------------------------------------------

# Run in a fresh interpreter: import the heavy modules once, then fork one child per cell and
# execute the cell's whole source there in an empty namespace (what a reader who pastes the
# cell into a new notebook has: the installed packages, nothing else).
_RUNNER = r"""
import json, os, sys, traceback
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot  # noqa: F401
import torch  # noqa: F401
import haformer  # noqa: F401
try:
    import IPython.display, myst_nb  # noqa: F401
except ImportError:
    pass

cells = json.load(sys.stdin)
failed = False
for cell in cells:
    pid = os.fork()
    if pid == 0:
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # the cell's own prints: not needed
        try:
            code = compile(cell["source"], cell["name"], "exec")
            exec(code, {"__name__": "__main__"})
        except BaseException:
            sys.stderr.write(f"FAILED {cell['name']}\n" + traceback.format_exc())
            sys.stderr.flush()
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0 and os.environ.get("STOP_FIRST") == "1":
        sys.exit(1)  # stop at the first cell that does not run alone
    failed = failed or os.waitstatus_to_exitcode(status) != 0
sys.exit(1 if failed else 0)
"""


def run_alone(
    cells: list[Cell], *, stop_first: bool = True, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """Run each cell alone (a fresh namespace, cwd book/); by default stop at the first failure.

    Environment: HAFORMER_SMOKE=1, OMP_NUM_THREADS=1, HF_HUB_OFFLINE=1, MPLBACKEND=Agg, and
    CAMVID_ROOT at the 16-pair CamVid copy beside the repository when it is there.
    """
    import json

    env = dict(os.environ)
    env.update(HAFORMER_SMOKE="1", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", MPLBACKEND="Agg")
    env["STOP_FIRST"] = "1" if stop_first else "0"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if (SHARED_DATA / "camvid-mini").is_dir():
        env["CAMVID_ROOT"] = str(SHARED_DATA / "camvid-mini")
    payload = json.dumps([{"name": f"<{c}>", "source": c.source} for c in cells])
    return subprocess.run(
        [sys.executable, "-c", _RUNNER],
        input=payload,
        capture_output=True,
        text=True,
        cwd=BOOK,
        env=env,
        timeout=timeout,
    )
