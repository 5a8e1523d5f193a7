"""Escaping user text (file, column and level names) for every place the app renders it.

Streamlit renders markdown (with ``$...$`` as LaTeX) in ``st.markdown``, alert boxes,
captions and widget labels; plotly renders a subset of HTML in titles, labels, hover text
and annotations.  A column called ``<script>`` or ``$x$`` or ``**bold**`` must show as
those characters, never as markup.
"""

from __future__ import annotations

import html
import re

# Every character CommonMark lets a backslash escape, plus "$" (Streamlit's LaTeX) and
# "~" (strikethrough); backslash-escaping is exact for all of them.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>$~&:=\"'])")


def md(text: object) -> str:
    """User text made literal inside Streamlit markdown (``st.markdown``, labels, alerts).

    Parameters
    ----------
    text : object
        Any value; converted with ``str``.

    Returns
    -------
    str
        The text with every markdown, HTML and LaTeX special character backslash-escaped
        and line breaks turned into spaces (a name never starts a new block).
    """
    s = str(text).replace("\r", " ").replace("\n", " ")
    return _MD_SPECIAL.sub(r"\\\1", s)


def html_text(text: object) -> str:
    """User text made literal inside HTML (``st.html`` or ``unsafe_allow_html``)."""
    return html.escape(str(text), quote=True)


def plotly_text(text: object) -> str:
    """User text made literal inside plotly titles, axis labels, hover text and annotations.

    Plotly interprets a small HTML subset (``<b>``, ``<br>``, ``<a href>``) and, when
    MathJax is present, strings wrapped in ``$``.  Entities are decoded by plotly, so
    ``&lt;`` shows as ``<`` and ``&#36;`` as ``$``.
    """
    s = html.escape(str(text), quote=True)
    return s.replace("$", "&#36;").replace("\n", " ")


def code_inline(text: object) -> str:
    """User text as inline code in markdown, safe whatever backticks it holds."""
    s = str(text).replace("\n", " ")
    longest = max((len(m) for m in re.findall(r"`+", s)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{fence}{pad}{s}{pad}{fence}"
