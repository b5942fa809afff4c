"""The built book as a reader's browser shows it: every page in headless Chromium.

The session's build (the ``book`` fixture of conftest.py) is served on 127.0.0.1 and every
HTML page is opened in Debian's Chromium driven by Playwright (``executable_path``: no browser
download). Requests to other hosts are aborted, except MathJax's CDN, which is answered from
the local copy that ``npm ci --prefix ci`` installs (ci/package.json): the math is typeset
without a network, while the published book keeps loading MathJax from its CDN.

Checked on every page: no JavaScript error of ours (uncaught exceptions, console errors of
local resources), every ``<img>`` loaded, no markdown table left as raw ``| a | b |`` text,
every math element typeset by MathJax, and on each chapter the Colab link of its notebook.

Chromium comes from ``$HAFORMER_CHROMIUM``, else ``/usr/bin/chromium`` (Debian), else a
``chromium``/``chromium-browser``/``google-chrome`` on the PATH. Without Chromium or the local
MathJax these tests skip, except under CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import functools
import http.server
import mimetypes
import os
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import nbformat
import pytest
import yaml
from book_build import Build
from playwright.sync_api import Browser, ConsoleMessage, Route, sync_playwright
from sphinx.ext.mathjax import MATHJAX_URL

REPO = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((REPO / "_config.yml").read_text(encoding="utf-8"))
TOC = yaml.safe_load((REPO / "_toc.yml").read_text(encoding="utf-8"))
PAGES = [c["file"] for part in TOC["parts"] for c in part["chapters"]]  # "book/01_introduction"
CHAPTERS = [p for p in PAGES if (REPO / f"{p}.ipynb").is_file()]  # the notebooks (Colab links)
MATHJAX_CDN = MATHJAX_URL[: MATHJAX_URL.index("es5/")]  # https://cdn.jsdelivr.net/npm/mathjax@3/
MATHJAX_LOCAL = REPO / "ci" / "node_modules" / "mathjax"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Visible text that is a markdown table nobody rendered: a separator row such as "|---|:--:|"
# (Sphinx turns "---" into an em dash in prose) or a row of three or more cells.
RAW_TABLE = re.compile(r"\|(\s*:?[-\u2013\u2014]+:?\s*\|)+|(\|[^|\n]+){3,}\|")

# Two errors that the tools behind the book raise on every page, whatever the book holds:
# sphinx-thebe adds its inline config script twice (a second ``const`` declaration), and
# pydata-sphinx-theme logs an empty theme mode on a first visit (no localStorage yet). Only
# these exact messages are let through; anything else fails the test.
UPSTREAM_NOISE = {
    "uncaught: Identifier 'THEBE_JS_URL' has already been declared",
    "console: Got invalid theme mode: . Resetting to auto.",
}
REDIRECT = re.compile(r'<meta http-equiv="Refresh" content="0; url=([^"]+)"', re.IGNORECASE)

# One pytest-xdist worker runs these and tests/test_book.py: the book is built once.
pytestmark = [pytest.mark.xdist_group("book"), pytest.mark.slow]


def _need(found: bool, what: str) -> None:
    """Skip without ``what`` on a developer's machine; fail under CI, which must have it."""
    if not found:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(what)


def _chromium() -> str | None:
    candidates = [os.environ.get("HAFORMER_CHROMIUM"), "/usr/bin/chromium"]
    candidates += [shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")]
    return next((c for c in candidates if c and Path(c).is_file()), None)


@dataclass
class PageReport:
    """What Chromium showed on one page."""

    errors: list[str] = field(default_factory=list)  # uncaught exceptions, console errors
    redirect: str | None = None  # a stub that only redirects: where to
    broken_images: list[str] = field(default_factory=list)
    raw_tables: list[str] = field(default_factory=list)
    output_tables: int = 0  # <table> elements inside cell outputs
    math: int = 0  # elements Sphinx marked as math
    typeset: int = 0  # of those, the ones holding MathJax's output (mjx-container)
    colab: list[str] = field(default_factory=list)  # hrefs of Colab launch links


@pytest.fixture(scope="module")
def site(book: Build) -> Iterator[str]:
    """The built HTML served on 127.0.0.1 (one thread, stopped with the module)."""
    assert book.returncode == 0, "jupyter-book build failed:\n" + book.log[-3000:]
    handler = functools.partial(QuietHandler, directory=str(book.html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def pages(book: Build, site: str) -> dict[str, PageReport]:
    """``{page path: report}`` for every HTML page of the build, each opened in Chromium."""
    chromium = _chromium()
    _need(chromium is not None, "no Chromium: apt-get install chromium (or set HAFORMER_CHROMIUM)")
    _need(
        (MATHJAX_LOCAL / "es5" / "tex-mml-chtml.js").is_file(),
        f"no local MathJax at {MATHJAX_LOCAL}: run npm ci --prefix ci",
    )
    paths = sorted(
        str(p.relative_to(book.html))
        for p in book.html.rglob("*.html")
        if not p.relative_to(book.html).parts[0].startswith("_")
    )
    reports: dict[str, PageReport] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            for path in paths:
                stub = REDIRECT.match((book.html / path).read_text(encoding="utf-8"))
                if stub:  # nothing to check there but that its target was built
                    reports[path] = PageReport(redirect=stub[1])
                else:
                    reports[path] = _visit(browser, site + path)
        finally:
            browser.close()
    return reports


def _visit(browser: Browser, url: str) -> PageReport:
    report = PageReport()
    page = browser.new_page()
    page.route("**/*", _serve_locally)
    page.on("pageerror", lambda error: _record(report, f"uncaught: {error.message}"))
    page.on("console", lambda msg: _console(msg, report))
    page.goto(url, wait_until="load")
    page.evaluate(
        """() => new Promise(resolve => {
            const mj = window.MathJax;
            if (mj && mj.startup && mj.startup.promise) mj.startup.promise.then(resolve, resolve);
            else resolve();
        })"""
    )
    report.broken_images = page.evaluate(
        """async () => {
            const images = [...document.images];
            images.forEach(img => { img.loading = "eager"; });
            await Promise.all(images.map(img => img.decode().catch(() => null)));
            return images.filter(img => !(img.complete && img.naturalWidth > 0))
                         .map(img => img.currentSrc || img.src);
        }"""
    )
    report.output_tables = page.locator(".cell_output table").count()
    report.math = page.locator(".math").count()
    report.typeset = page.locator(".math:has(mjx-container)").count()
    report.colab = page.eval_on_selector_all(
        "a[href^='https://colab.research.google.com/']", "links => links.map(a => a.href)"
    )
    # The text a reader sees outside code blocks and math: hide those, then read innerText.
    page.add_style_tag(
        content="pre, code, .math, mjx-container, script, style { display: none !important; }"
    )
    text = page.evaluate("() => document.body.innerText")
    report.raw_tables = [m.group(0)[:80] for m in RAW_TABLE.finditer(text)]
    page.close()
    return report


def _serve_locally(route: Route) -> None:
    """Let requests to 127.0.0.1 through, answer MathJax's CDN from disk, abort the rest."""
    url = route.request.url
    if urlsplit(url).hostname == "127.0.0.1":
        route.continue_()
    elif url.startswith(MATHJAX_CDN):
        file = MATHJAX_LOCAL / urlsplit(url).path.removeprefix(urlsplit(MATHJAX_CDN).path)
        if file.is_file():
            kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
            route.fulfill(path=file, content_type=kind)
        else:
            route.fulfill(status=404, body=f"not in the local MathJax copy: {url}")
    else:
        route.abort()


def _console(msg: ConsoleMessage, report: PageReport) -> None:
    """Record console errors, except those of external requests the test itself aborted."""
    if msg.type != "error":
        return
    source = (msg.location or {}).get("url", "")
    external = source and urlsplit(source).hostname not in ("127.0.0.1", None)
    if not (external and "Failed to load resource" in msg.text):
        _record(report, f"console: {msg.text}", f" ({source})")


def _record(report: PageReport, error: str, where: str = "") -> None:
    if error not in UPSTREAM_NOISE:
        report.errors.append(error + where)


def test_every_page_was_opened(book: Build, pages: dict[str, PageReport]) -> None:
    opened = {path for path, r in pages.items() if r.redirect is None}
    missing = [c for c in PAGES if f"{c}.html" not in opened]
    assert not missing, f"chapters without a page: {missing}"
    for path, r in pages.items():
        if r.redirect is not None:
            target = (book.html / path).parent / r.redirect
            assert target.is_file() and str(target.relative_to(book.html)) in opened, path


def test_no_javascript_errors(pages: dict[str, PageReport]) -> None:
    bad = {path: r.errors for path, r in pages.items() if r.errors}
    assert not bad, f"JavaScript errors: {bad}"


def test_every_image_loads(pages: dict[str, PageReport]) -> None:
    bad = {path: r.broken_images for path, r in pages.items() if r.broken_images}
    assert not bad, f"images that did not load: {bad}"


def test_no_raw_markdown_tables(pages: dict[str, PageReport]) -> None:
    bad = {path: r.raw_tables for path, r in pages.items() if r.raw_tables}
    assert not bad, f"markdown tables shown as raw text (render them as MyST): {bad}"


def _markdown_tables(chapter: str) -> int:
    """How many ``text/markdown`` outputs of the chapter's notebook hold a pipe table."""
    nb = nbformat.read(REPO / f"{chapter}.ipynb", as_version=4)
    outputs = [out for cell in nb.cells for out in cell.get("outputs", [])]
    markdown = [out.get("data", {}).get("text/markdown", "") for out in outputs]
    return sum(bool(re.search(r"^\|?\s*:?-{3,}", md, re.MULTILINE)) for md in markdown)


def test_markdown_table_outputs_render_as_tables(pages: dict[str, PageReport]) -> None:
    expected = {c: _markdown_tables(c) for c in CHAPTERS}
    assert sum(expected.values()), "no chapter outputs a markdown table: the check is empty"
    shown = {c: pages[f"{c}.html"].output_tables for c in CHAPTERS}
    short = {c: f"{shown[c]} of {n}" for c, n in expected.items() if shown[c] < n}
    assert not short, f"markdown table outputs not rendered as <table> (shown of total): {short}"


def test_math_is_typeset(pages: dict[str, PageReport]) -> None:
    with_math = {path: r for path, r in pages.items() if r.math}
    assert with_math, "no page has math: the check would prove nothing"
    bad = {path: f"{r.typeset} of {r.math}" for path, r in with_math.items() if r.typeset < r.math}
    assert not bad, f"math elements not typeset by MathJax (typeset of total): {bad}"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_colab_link_opens_the_chapter_notebook(pages: dict[str, PageReport], chapter: str) -> None:
    repo = CONFIG["repository"]
    slug = repo["url"].rstrip("/").removeprefix("https://github.com/")
    prefix = repo.get("path_to_book", "").strip("/")
    path = f"{prefix}/{chapter}.ipynb".lstrip("/")
    want = f"https://colab.research.google.com/github/{slug}/blob/{repo['branch']}/{path}"
    assert want.endswith(f"/blob/main/book/{Path(chapter).name}.ipynb")
    links = pages[f"{chapter}.html"].colab
    assert links and set(links) == {want}, f"Colab links on {chapter}: {links}, expected {want}"
