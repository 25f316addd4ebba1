"""Bibliography labels that read like the citations in the text: a Sphinx extension.

With ``bibtex_reference_style: author_year`` the pages cite as "[Frankle and Carbin, 2019]",
but sphinxcontrib-bibtex's default style labels the References list "[FC19]", so a reader
meets two names for one work. This extension registers the pybtex style
``psputil-author-year``: the "plain" formatting and sorting (by author, year, title) with
labels written as the text cites them, "Last", "Last and Last" or "Last et al." then the
year (a, b, ... added when two works would share a label). ``_config.yml`` selects it with
``bibtex_default_style: psputil-author-year``.
"""

import re

from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle

NAME = "psputil-author-year"


def author_year(entry):
    """ "Last, 2019", "Last and Other, 2019" or "Last et al., 2019" for a pybtex entry (author, else editor)."""
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [_plain(" ".join(map(str, person.rich_last_names))) for person in persons]
    if not names:
        who = _plain(entry.fields.get("title", "Anonymous"))
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who}, {entry.fields.get('year', 'n.d.')}"


def _plain(latex):
    """LaTeX text as plain text ("{Hessian}" -> "Hessian", "L{\\'e}on" -> "Léon")."""
    text = Text.from_latex(latex).render_as("text") if "\\" in latex or "{" in latex else latex
    return re.sub(r"\s+", " ", text).strip()


class AuthorYearLabels(BaseLabelStyle):
    """Labels "Author, year" (as sphinxcontrib-bibtex's author_year citations), unique within a list."""

    def format_labels(self, sorted_entries):
        labels = [author_year(entry) for entry in sorted_entries]
        for label in set(labels):
            if labels.count(label) > 1:
                suffixes = iter("abcdefghijklmnopqrstuvwxyz")
                labels = [f"{x}{next(suffixes)}" if x == label else x for x in labels]
        return iter(labels)


class AuthorYearStyle(PlainStyle):
    """pybtex's plain style (formatting, sorting) with ``AuthorYearLabels``."""

    default_label_style = NAME


def setup(app):
    """Sphinx entry point: register the pybtex plugins (before sphinxcontrib-bibtex looks them up)."""
    register_plugin("pybtex.style.labels", NAME, AuthorYearLabels, force=True)
    register_plugin("pybtex.style.formatting", NAME, AuthorYearStyle, force=True)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
