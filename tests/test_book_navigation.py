"""Finding one's way in the book: numbered chapters, linked cross-references, numbered key
equations, a hint for every exercise, citations that match the bibliography, the Colab setup
cell collapsed, and nothing cited that readers cannot open."""

from __future__ import annotations

import importlib.util
import re

import nbformat
import pytest
import yaml
from book_cells import BOOK, CHAPTERS, PAGES, REPO, SETUP_TAG
from pybtex.database import parse_file

CONFIG = yaml.safe_load((REPO / "_config.yml").read_text(encoding="utf-8"))
TOC = yaml.safe_load((REPO / "_toc.yml").read_text(encoding="utf-8"))
NAMES = [p.removeprefix("book/") for p in PAGES]


def markdown(page: str) -> str:
    """The Markdown of a page: a notebook's markdown cells, or the .md file."""
    path = BOOK / f"{page}.ipynb"
    if path.is_file():
        nb = nbformat.read(path, as_version=4)
        return "\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    return (BOOK / f"{page}.md").read_text(encoding="utf-8")


def section(text: str, title: str) -> str:
    """The text under the heading ``title`` up to the next heading of the same level or above."""
    match = re.search(rf"^(#+) {re.escape(title)}\s*$", text, flags=re.MULTILINE)
    if match is None:
        return ""
    level = len(match[1])
    rest = text[match.end() :]
    end = re.search(rf"^#{{1,{level}}} ", rest, flags=re.MULTILINE)
    return rest[: end.start()] if end else rest


def test_chapters_are_numbered() -> None:
    for part in TOC["parts"]:
        if part["caption"] != "Appendix":
            assert part.get("numbered") is True, f"part {part['caption']!r} is not numbered"
    assert CONFIG.get("html", {}).get("use_multitoc_numbering", True), (
        "chapter numbers must run across the parts (html.use_multitoc_numbering)"
    )


def test_appendix_pages_are_in_the_book() -> None:
    appendix = next(p for p in TOC["parts"] if p["caption"] == "Appendix")
    assert {c["file"] for c in appendix["chapters"]} >= {"book/seed", "book/notation"}


def test_markdown_outputs_are_parsed_as_myst() -> None:
    assert CONFIG["sphinx"]["config"].get("nb_render_markdown_format") == "myst", (
        "Markdown outputs (show_table) render as raw pipes unless parsed as MyST"
    )


@pytest.mark.parametrize("chapter", [c.removeprefix("book/") for c in CHAPTERS])
def test_colab_setup_cell_is_collapsed(chapter: str) -> None:
    nb = nbformat.read(BOOK / f"{chapter}.ipynb", as_version=4)
    setup = [c for c in nb.cells if SETUP_TAG in c.metadata.get("tags", [])]
    assert setup and "hide-input" in setup[0].metadata["tags"], (
        "the Colab setup cell must be tagged hide-input: run scripts/sync_repo_url.py"
    )


LINK = re.compile(r"\[[^\]]*\]\([^)]*\)")
CODE = re.compile(r"`[^`\n]*`")
FENCE = re.compile(r"^(```|~~~).*?^\1", flags=re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize("page", NAMES)
def test_chapter_mentions_are_links(page: str) -> None:
    text = FENCE.sub("", markdown(page))
    text = CODE.sub("", LINK.sub("", text))
    bare = re.findall(r".{0,30}\b[Cc]hapters? \d+.{0,20}", text)
    assert not bare, f"write these as links, e.g. [chapter 8](08_camvid.ipynb): {bare}"


DISPLAY_MATH = re.compile(r"\$\$(.+?)\$\$(?:[ \t]*\((?P<label>[\w-]+)\))?", flags=re.DOTALL)


def _labels() -> set[str]:
    return {m["label"] for p in NAMES for m in DISPLAY_MATH.finditer(markdown(p)) if m["label"]}


@pytest.mark.parametrize("page", NAMES)
def test_key_equations_are_numbered_and_referenced(page: str) -> None:
    text = markdown(page)
    equations = list(DISPLAY_MATH.finditer(text))
    if equations:
        assert any(m["label"] for m in equations), (
            "label the key equations: $$ ... $$ (eq-name), and refer to them with {eq}`eq-name`"
        )
    unknown = set(re.findall(r"\{eq\}`([^`]+)`", text)) - _labels()
    assert not unknown, f"{{eq}} references to equations that no page labels: {unknown}"


@pytest.mark.parametrize("page", NAMES)
def test_every_exercise_has_a_hint(page: str) -> None:
    exercises = section(markdown(page), "Exercises")
    if not exercises:
        pytest.skip("no exercises")
    items = re.findall(r"^\d+\. ", exercises, flags=re.MULTILINE)
    hints = re.findall(r"\{admonition\} Hint\s*\n\s*:class: dropdown", exercises)
    assert items, "an Exercises section without numbered exercises"
    assert len(hints) == len(items), (
        f"{len(items)} exercises but {len(hints)} collapsed hints "
        "(```{admonition} Hint / :class: dropdown, indented under each exercise)"
    )


BIB = parse_file(str(BOOK / "references.bib"))


@pytest.mark.parametrize("page", NAMES)
def test_citations_are_in_the_bibliography(page: str) -> None:
    keys = {
        k.strip()
        for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", markdown(page))
        for k in group.split(",")
    }
    assert keys <= set(BIB.entries), f"cited but not in references.bib: {keys - set(BIB.entries)}"


def _label_style():
    path = BOOK / "_ext" / "author_year_labels.py"
    spec = importlib.util.spec_from_file_location("author_year_labels", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bibliography_labels_are_author_year() -> None:
    config = CONFIG["sphinx"]["config"]
    assert config["bibtex_reference_style"] == "author_year"
    style = _label_style()
    assert config["bibtex_default_style"] == style.NAME
    assert CONFIG["sphinx"]["local_extensions"]["author_year_labels"] == "book/_ext"
    labels = dict(
        zip(
            BIB.entries,
            style.AuthorYearLabelStyle().format_labels(BIB.entries.values()),
            strict=True,
        )
    )
    assert labels["xu2024haformer"] == "Xu et al., 2024"
    assert labels["eigen2015predicting"] == "Eigen and Fergus, 2015"
    for key, label in labels.items():
        year = BIB.entries[key].fields["year"]
        first = BIB.entries[key].persons["author"][0].last_names[0]
        assert label.startswith(first) and re.search(rf", {year}[a-z]?$", label), (key, label)


def test_the_seed_specification_is_never_cited() -> None:
    """Readers never get ../shared: what the book needs from it lives in the appendix."""
    cited = []
    for page in NAMES:
        path = BOOK / f"{page}.ipynb"
        text = path.read_text(encoding="utf-8") if path.is_file() else markdown(page)
        if "seed-model.md" in text or "seed-README.md" in text:
            cited.append(page)
    assert not cited, f"{cited} cite the seed's files; cite the appendix page book/seed.md"
