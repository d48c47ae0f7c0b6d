"""Text from records (model names, scopes, paths) made inert in report.md.

A record is anyone's file: a model named ``x | y`` would split a table row, ``<img src=...>``
would be HTML, ``[x](http://...)`` a link. These helpers keep such text literal. The LaTeX
tables escape their text cells with pandas' own ``escape="latex"`` (analysis/latex.py).
"""

from __future__ import annotations

import re

# CommonMark inline syntax: code, emphasis, links/images, raw HTML, escapes. An underscore
# inside a word (mobilenetv2_100) is no emphasis in CommonMark, so it is left readable.
_MD_SPECIAL = re.compile(r"[\\`*\[\]<>!]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_LINE_BREAK = re.compile(r"[\r\n\t\f\v]+")


def _one_line(value: object) -> str:
    return _LINE_BREAK.sub(" ", str(value))


def md_text(value: object) -> str:
    """``value`` as literal Markdown text on one line (table pipes: see :func:`md_cell`)."""
    return _MD_SPECIAL.sub(lambda m: "\\" + m.group(0), _one_line(value))


def md_code(value: object) -> str:
    """``value`` as an inline code span, whatever backticks it holds."""
    text = _one_line(value)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def md_cell(text: str) -> str:
    """A table cell: a pipe in it (escaped even inside code spans, as GFM reads tables) does
    not end the cell, and it stays on one line."""
    return _one_line(text).replace("|", "\\|")
