"""Tables that read as tables everywhere: rendered Markdown in Jupyter, aligned text elsewhere.

The book's cells show their results with ``show_table(rows, headers)``. In a notebook the
table is displayed as Markdown (the built book renders it as an HTML table); in a plain
``python`` run, or in a terminal IPython, the same call prints aligned columns.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["markdown_table", "show_table", "text_table"]


def _cells(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> list[list[str]]:
    width = len(headers)
    table = [[str(h) for h in headers]]
    for i, row in enumerate(rows):
        if len(row) != width:
            raise ValueError(
                f"row {i} has {len(row)} cells but there are {width} headers: {list(row)!r}"
            )
        table.append([str(value) for value in row])
    return table


def _align(align: str | None, width: int) -> str:
    align = align or "l" * width
    if len(align) != width or set(align) - set("lrc"):
        raise ValueError(
            f"align must have one letter l, r or c per column ({width}); got {align!r}"
        )
    return align


def markdown_table(
    rows: Sequence[Sequence[object]], headers: Sequence[str], align: str | None = None
) -> str:
    """A Markdown (GFM) table; ``align`` has one of ``l``, ``r``, ``c`` per column."""
    table = _cells(rows, headers)
    rules = {"l": "---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(table[0]) + " |"]
    lines.append("|" + "|".join(rules[a] for a in _align(align, len(headers))) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in table[1:]]
    return "\n".join(lines)


def text_table(
    rows: Sequence[Sequence[object]], headers: Sequence[str], align: str | None = None
) -> str:
    """The same table as aligned plain text, for a terminal."""
    table = _cells(rows, headers)
    modes = _align(align, len(headers))
    widths = [max(len(row[j]) for row in table) for j in range(len(headers))]
    pad = {"l": str.ljust, "r": str.rjust, "c": str.center}

    def line(row: list[str]) -> str:
        return "  ".join(pad[m](v, w) for v, w, m in zip(row, widths, modes, strict=True))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(table[0]).rstrip(), rule, *(line(r).rstrip() for r in table[1:])])


def _shell() -> object | None:
    """The running IPython shell, or None (plain Python, or IPython not installed)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def show_table(
    rows: Sequence[Sequence[object]],
    headers: Sequence[str],
    align: str | None = None,
) -> None:
    """Show ``rows`` under ``headers``: Markdown in Jupyter, aligned text otherwise.

    Cells are converted with ``str``; format numbers before passing them (``f"{x:,}"``).
    In IPython both forms are sent; the front end picks the richest it can show (Jupyter
    the Markdown, a terminal the text). Raises ValueError if a row's length differs from
    the number of headers.
    """
    text = text_table(rows, headers, align)
    if _shell() is None:
        print(text)
        return
    from IPython.display import display

    markdown = markdown_table(rows, headers, align)
    display({"text/markdown": markdown, "text/plain": text}, raw=True)
