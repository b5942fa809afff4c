"""haformer.display: a table is Markdown in Jupyter and aligned text in a plain Python run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from haformer import display
from haformer.display import markdown_table, show_table, text_table

REPO = Path(__file__).resolve().parents[1]
ROWS = [("Road", "83.80", 1), ("SignSymbol", "11.51", 22)]
HEADERS = ["class", "IoU (%)", "rank"]


def test_markdown_table_aligns_columns() -> None:
    md = markdown_table(ROWS, HEADERS, align="lrr")
    assert md.splitlines() == [
        "| class | IoU (%) | rank |",
        "|---|---:|---:|",
        "| Road | 83.80 | 1 |",
        "| SignSymbol | 11.51 | 22 |",
    ]


def test_text_table_is_aligned_text() -> None:
    lines = text_table(ROWS, HEADERS, align="lrr").splitlines()
    assert lines[0] == "class       IoU (%)  rank"
    assert lines[1] == "----------  -------  ----"
    assert lines[2] == "Road          83.80     1"
    assert lines[3] == "SignSymbol    11.51    22"
    assert "|" not in "".join(lines)


@pytest.mark.parametrize(
    ("rows", "align", "message"),
    [([("a", "b")], None, "row 0 has 2 cells but there are 3 headers"), (ROWS, "lx", "align")],
)
def test_bad_tables_say_what_is_wrong(rows, align, message) -> None:
    with pytest.raises(ValueError, match=message):
        markdown_table(rows, HEADERS, align)


def test_plain_python_prints_text_not_an_object_repr() -> None:
    code = (
        f"from haformer.display import show_table\nshow_table({ROWS!r}, {HEADERS!r}, align='lrr')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    assert out == text_table(ROWS, HEADERS, align="lrr") + "\n"
    assert "object at" not in out and "IPython" not in out


def test_ipython_gets_markdown_and_text(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("IPython")
    import IPython.display

    shown = []
    monkeypatch.setattr(display, "_shell", lambda: object())
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw: shown.append((obj, raw)))
    show_table(ROWS, HEADERS, align="lrr")
    assert shown == [
        (
            {
                "text/markdown": markdown_table(ROWS, HEADERS, "lrr"),
                "text/plain": text_table(ROWS, HEADERS, "lrr"),
            },
            True,
        )
    ]
