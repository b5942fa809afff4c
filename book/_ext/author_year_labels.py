"""Author-year labels in the bibliography ("Xu et al., 2024"), matching the text's citations.

The book cites with ``bibtex_reference_style: author_year``, so the text reads "Xu et al.
[2024]"; pybtex's own label styles would label the same entry "[XJW+24]" or "[1]" in the list
of references. This Sphinx extension registers a pybtex label style and a formatting style,
both named ``authoryear``, that ``_config.yml`` selects with ``bibtex_default_style``.
"""

from __future__ import annotations

import string
from collections import Counter
from collections.abc import Iterable, Iterator

from pybtex.database import Entry
from pybtex.plugin import register_plugin
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle

NAME = "authoryear"


def author_year(entry: Entry) -> str:
    """'Eigen and Fergus, 2015', 'Xu et al., 2024': one or two last names, or the first + et al."""
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [" ".join(p.last_names).replace("{", "").replace("}", "") for p in persons]
    year = entry.fields.get("year", "n.d.")
    if not names:
        return f"{entry.fields.get('title', entry.key)}, {year}"
    who = names[0] if len(names) == 1 else " and ".join(names) if len(names) == 2 else ""
    return f"{who or names[0] + ' et al.'}, {year}"


class AuthorYearLabelStyle(BaseLabelStyle):
    """Author-year labels; equal ones get a, b, ... after the year (2024a, 2024b)."""

    def format_labels(self, sorted_entries: Iterable[Entry]) -> Iterator[str]:
        labels = [author_year(entry) for entry in sorted_entries]
        counts, seen = Counter(labels), Counter()
        for label in labels:
            if counts[label] > 1:
                yield label + string.ascii_lowercase[seen[label]]
                seen[label] += 1
            else:
                yield label


class AuthorYearStyle(UnsrtStyle):
    """pybtex's unsrt entries, labelled by author and year, sorted by author, year, title."""

    default_label_style = NAME
    default_sorting_style = "author_year_title"


def setup(app: object) -> dict[str, bool]:
    register_plugin("pybtex.style.labels", NAME, AuthorYearLabelStyle, force=True)
    register_plugin("pybtex.style.formatting", NAME, AuthorYearStyle, force=True)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
