"""The book's diagrams: regenerated from the package they equal the committed ones, the shapes
they show are the model's, and every one is a numbered figure that the text refers to."""

from __future__ import annotations

import html
import importlib.util
import re
from pathlib import Path

import matplotlib
import pytest
import torch
from book_cells import BOOK, PAGES, REPO

from haformer.model import SEED_CHANNELS, SEED_DENOTES, create_model

FIGURES = BOOK / "figures"
SCRIPT = FIGURES / "draw_figures.py"
TEXT = re.compile(r"<text[^>]*>([^<]*)</text>")
VERSION = re.compile(r"Matplotlib v([\w.+-]+)")


def svg_texts(path: Path) -> list[str]:
    return [html.unescape(t) for t in TEXT.findall(path.read_text(encoding="utf-8"))]


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    spec = importlib.util.spec_from_file_location("draw_figures", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    paths = module.draw_all(tmp_path_factory.mktemp("figures"))
    return {p.name: p for p in paths}


def test_figures_regenerate_to_the_committed_ones(regenerated: dict[str, Path]) -> None:
    committed = {p.name: p for p in FIGURES.glob("*.svg")}
    assert sorted(committed) == sorted(regenerated), (
        "book/figures/*.svg and what draw_figures.py draws differ: run "
        "python book/figures/draw_figures.py"
    )
    stale = []
    for name, path in committed.items():
        old, new = path.read_text(encoding="utf-8"), regenerated[name].read_text(encoding="utf-8")
        same_matplotlib = VERSION.search(old)[1] == matplotlib.__version__
        # With the matplotlib that drew them, the files must be equal byte for byte; another
        # version draws the same things with other path data, so compare what they say.
        if (old != new) if same_matplotlib else (svg_texts(path) != svg_texts(regenerated[name])):
            stale.append(name)
    assert not stale, f"{stale} are stale: run python book/figures/draw_figures.py and commit"


def test_the_model_figure_shows_the_model_shapes() -> None:
    """Shapes measured here, independently of the drawing script, are those in the figure."""
    model = create_model("haformer_b1", num_classes=11).eval()
    seen = {}
    hooks = [
        model.fusion.register_forward_hook(
            lambda m, args, out: seen.update(a=args[0], b=args[1], fused=out)
        ),
        model.proj.register_forward_hook(lambda m, args, out: seen.update(vit=args[0], proj=out)),
        model.stages[1].register_forward_hook(lambda m, args, out: seen.update(s8=out)),
    ]
    with torch.no_grad():
        seen["out"] = model(torch.randn(1, 3, 360, 480))
    for hook in hooks:
        hook.remove()
    text = "\n".join(svg_texts(FIGURES / "haformer.svg"))
    for name, t in seen.items():
        assert "(" + ", ".join(map(str, t.shape[1:])) + ")" in text, (name, tuple(t.shape))
    for c, ds in zip(SEED_CHANNELS, SEED_DENOTES, strict=True):
        assert f"C = {c}, denote {','.join(map(str, ds))}" in text


def _book_text() -> str:
    texts = []
    for page in PAGES:
        path = REPO / f"{page}.ipynb"
        if path.is_file():
            import nbformat

            nb = nbformat.read(path, as_version=4)
            texts += [c.source for c in nb.cells if c.cell_type == "markdown"]
        else:
            texts.append((REPO / f"{page}.md").read_text(encoding="utf-8"))
    return "\n".join(texts)


FIGURE = re.compile(r"[`:]{3,}\{figure\}\s+(?P<path>\S+)\s*\n(?P<options>(?:\s*:[^\n]*\n)*)")


@pytest.mark.parametrize("svg", sorted(p.name for p in FIGURES.glob("*.svg")))
def test_every_figure_is_numbered_and_referenced(svg: str) -> None:
    text = _book_text()
    names = [
        re.search(r":name:\s*(\S+)", m["options"])
        for m in FIGURE.finditer(text)
        if m["path"].endswith(f"figures/{svg}")
    ]
    assert names, f"no {{figure}} directive shows figures/{svg} in a page of the book"
    assert names[0] is not None, f"the {{figure}} of {svg} needs a :name: to be referenced"
    label = names[0][1]
    assert re.search(rf"\{{numref\}}`(?:[^`<]*<)?{re.escape(label)}>?`", text), (
        f"figure {label} ({svg}) is never referenced with {{numref}}`{label}`"
    )
