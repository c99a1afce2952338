"""Syntax highlighting on the server with Pygments (already installed with rich), so pages need no script."""

from __future__ import annotations

from functools import cache

from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import DiffLexer, JsonLexer, PythonLexer, TextLexer, YamlLexer, get_lexer_by_name
from pygments.util import ClassNotFound

from agenttrain.viewer.html import Markup

CSS_CLASS = "hl"
LEXERS = {"python": PythonLexer, "diff": DiffLexer, "json": JsonLexer, "yaml": YamlLexer}
# Past this size a block is shown as plain (escaped) text: lexing megabytes of model output is slow and
# tells the reader nothing more.
MAX_HIGHLIGHT_CHARS = 100_000


def code(text: str, language: str = "python") -> Markup:
    """A `<div class="hl"><pre>` block; Pygments escapes every token."""
    lexer = LEXERS[language]() if language in LEXERS else _lexer_by_name(language)
    if len(text) > MAX_HIGHLIGHT_CHARS:
        lexer = TextLexer()
    return Markup(highlight(text, lexer, HtmlFormatter(cssclass=CSS_CLASS)))


def _lexer_by_name(language: str) -> Lexer:
    try:
        return get_lexer_by_name(language)
    except ClassNotFound:
        return TextLexer()


@cache
def stylesheet() -> str:
    return HtmlFormatter(cssclass=CSS_CLASS, style="default").get_style_defs(f".{CSS_CLASS}")
