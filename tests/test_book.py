"""The book: its notebooks, its repository URL, and its HTML build (Jupyter Book 1.x).

The build (seconds to a minute) runs once per session, into a temporary folder, executing
nothing: it renders the outputs committed in the notebooks, with warnings as errors (the
``book`` fixture of conftest.py, shared with test_browser.py).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml
from book_build import Build
from bs4 import BeautifulSoup

REPO = Path(__file__).resolve().parents[1]
SYNC = REPO / "scripts" / "sync_repo_url.py"
CONFIG = yaml.safe_load((REPO / "_config.yml").read_text(encoding="utf-8"))
TOC = yaml.safe_load((REPO / "_toc.yml").read_text(encoding="utf-8"))
PAGES = [c["file"] for part in TOC["parts"] for c in part["chapters"]]  # "book/01_introduction"
CHAPTERS = [p for p in PAGES if (REPO / f"{p}.ipynb").is_file()]  # the notebooks
REPO_URL = CONFIG["repository"]["url"].rstrip("/")
BRANCH = CONFIG["repository"]["branch"]
SLUG = REPO_URL.removeprefix("https://github.com/")  # "owner/name"
TRACEBACK_MARKS = ("Traceback (most recent call last)", 'class="output traceback')
WARNING_RE = re.compile(r"\b[A-Z]\w*Warning\b")

_spec = importlib.util.spec_from_file_location("sync_repo_url", SYNC)
sync = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sync)

# Under pytest-xdist with --dist loadgroup, one worker runs these tests and builds the book once.
pytestmark = pytest.mark.xdist_group("book")


def _notebook(chapter: str) -> nbformat.NotebookNode:
    path = REPO / f"{chapter}.ipynb"
    if not path.is_file():
        pytest.fail(f"{chapter} is in _toc.yml but {path.relative_to(REPO)} does not exist")
    return nbformat.read(path, as_version=4)


def _h1_lines(markdown: str) -> list[str]:
    """The ``# Title`` lines of a markdown cell, ignoring fenced code blocks."""
    lines, fenced = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and re.match(r"#\s", line):
            lines.append(line)
    return lines


# --- the repository URL lives in _config.yml only -------------------------------------------


def test_repo_url_in_sync() -> None:
    proc = subprocess.run(
        [sys.executable, str(SYNC), "--check"], capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _repo_files() -> list[Path]:
    git = shutil.which("git")
    if git is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout: cannot list the repository's files")
    out = subprocess.run(
        [git, "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    ).stdout
    return [REPO / name for name in out.split("\0") if name and (REPO / name).is_file()]


def _outside_generated(path: Path, text: str) -> str:
    """``text`` without the parts that scripts/sync_repo_url.py generates."""
    if path.suffix == ".ipynb":
        nb = nbformat.reads(text, as_version=4)
        cells = [c for c in nb.cells if sync.SETUP_TAG not in c.metadata.get("tags", [])]
        return nbformat.writes(nbformat.v4.new_notebook(cells=cells))
    if path == REPO / sync.REPOSITORY_MODULE:
        return "" if text == sync.repository_module(REPO_URL, BRANCH) else text
    if path == REPO / "README.md":
        for name in sync.readme_blocks(REPO_URL, BRANCH):
            text = re.sub(rf"<!-- {name} -->.*?<!-- /{name} -->", "", text, flags=re.DOTALL)
    return text


def test_repo_url_written_once() -> None:
    """Only _config.yml spells the URL; everything else that needs it is generated from it."""
    needle = f"github.com/{SLUG}".lower()
    stray = []
    for path in _repo_files():
        if path == REPO / "_config.yml":
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if needle in text.lower() and needle in _outside_generated(path, text).lower():
            stray.append(str(path.relative_to(REPO)))
    assert not stray, (
        f"{needle} is written by hand in {stray}: read it from _config.yml, or generate it with "
        "scripts/sync_repo_url.py"
    )


# --- the notebooks ---------------------------------------------------------------------------


def test_toc_and_notebooks_agree() -> None:
    listed = {f"{c}.ipynb" for c in CHAPTERS}
    present = {str(p.relative_to(REPO)) for p in (REPO / "book").glob("*.ipynb")}
    assert not present - listed, f"notebooks missing from _toc.yml: {sorted(present - listed)}"
    missing = [p for p in PAGES if not any((REPO / f"{p}{s}").is_file() for s in (".ipynb", ".md"))]
    assert not missing, f"pages in _toc.yml without a notebook or a .md file: {missing}"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_notebook_structure(chapter: str) -> None:
    nb = _notebook(chapter)
    first = nb.cells[0] if nb.cells else None
    assert first is not None and first.cell_type == "markdown", "first cell must be markdown"
    assert first.source.startswith("# "), "the first cell must start with '# Title'"
    h1 = [line for c in nb.cells if c.cell_type == "markdown" for line in _h1_lines(c.source)]
    assert len(h1) == 1, f"exactly one '# ' heading per notebook, found {h1}"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and sync.SETUP_TAG in code[0].metadata.get("tags", []), (
        "the first code cell must be the colab-setup cell (run scripts/sync_repo_url.py)"
    )
    assert nb.cells[1] is code[0], "the colab-setup cell must come right after the title cell"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_notebook_executed_cleanly(chapter: str) -> None:
    nb = _notebook(chapter)
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    assert counts and None not in counts, "every code cell must be executed (commit the outputs)"
    assert counts == sorted(counts) and len(set(counts)) == len(counts), (
        f"cells must be executed once, top to bottom, in one kernel; execution counts: {counts}"
    )
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            where = f"cell {i} ({cell.source[:60]!r})"
            assert out.output_type != "error", f"{where} has an error: {out.get('ename')}"
            if out.output_type == "stream" and out.name == "stderr":
                assert not WARNING_RE.search(out.text), f"{where} shows a warning: {out.text}"
                assert "Traceback" not in out.text, f"{where} shows a traceback: {out.text}"


# --- the HTML build --------------------------------------------------------------------------


def _page(book: Build, chapter: str) -> BeautifulSoup:
    path = book.html / f"{chapter}.html"
    assert path.is_file(), f"{chapter} was not built: {path} is missing"
    return BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


@pytest.mark.slow
def test_book_builds_without_warnings(book: Build) -> None:
    problems = [line for line in book.log.splitlines() if "WARNING" in line or "ERROR" in line]
    assert book.returncode == 0, "jupyter-book build failed:\n" + "\n".join(
        problems or book.log.splitlines()[-40:]
    )
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_every_chapter_in_navigation(book: Build) -> None:
    index = _page(book, TOC["root"])
    nav = index.select_one("nav.bd-docs-nav")
    assert nav is not None, "the index page has no navigation sidebar"
    base = Path(TOC["root"]).parent
    linked = {
        str((base / a["href"].split("#")[0]).with_suffix(""))
        for a in nav.find_all("a", href=True)
        if not a["href"].startswith(("#", "http"))
    }
    missing = [c for c in PAGES if c not in linked]
    assert not missing, f"pages missing from the navigation: {missing}"
    captions = [c.get_text(strip=True) for c in nav.select(".caption-text")]
    assert captions == [part["caption"] for part in TOC["parts"]]


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_has_colab_link(book: Build, chapter: str) -> None:
    prefix = CONFIG["repository"].get("path_to_book", "").strip("/")
    path = f"{prefix}/{chapter}.ipynb".lstrip("/")
    url = f"https://colab.research.google.com/github/{SLUG}/blob/{BRANCH}/{path}"
    hrefs = {a["href"] for a in _page(book, chapter).find_all("a", href=True)}
    assert url in hrefs, f"no Colab launch link {url} on the page of {chapter}"


@pytest.mark.slow
def test_no_page_shows_a_traceback(book: Build) -> None:
    pages = sorted(book.html.rglob("*.html"))
    assert pages, f"no HTML under {book.html}"
    bad = [
        str(page.relative_to(book.html))
        for page in pages
        if any(mark in page.read_text(encoding="utf-8") for mark in TRACEBACK_MARKS)
    ]
    assert not bad, f"pages showing a traceback or an error output: {bad}"
