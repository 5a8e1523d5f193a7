"""User text (file, column and level names) shows as typed: escaped for markdown, HTML and plotly."""

import html
import re

import numpy as np
import pandas as pd
import pytest

from explorer.escape import code_inline, html_text, md, plotly_text

HOSTILE = [
    "<script>window.__pwned = 1</script>",
    "<img src=x onerror=alert(1)>",
    "$x^2$",
    "$$\\int$$",
    "**bold** _it_ `code`",
    "[click](javascript:alert(1))",
    "# heading",
    "- item",
    "1. item",
    "> quote",
    "a | b | c",
    "line\nbreak",
    "back\\slash",
    "~~strike~~",
    ":red[colour] :material/home:",
    "&lt;already&gt; &amp;",
    "<b>bold</b><br>",
    "éàü 测试 😀",
]

# CommonMark: a backslash before any ASCII punctuation character makes it literal.
_ESCAPED = re.compile(r"\\([!-/:-@\[-`{-~])")
_ASCII_PUNCT = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
# Characters that start markup in Streamlit's markdown (CommonMark, GFM, LaTeX, directives).
_ACTIVE = set("\\`*_{}[]()#+-.!|<>$~&:=")


@pytest.mark.parametrize("text", HOSTILE)
def test_markdown_escaping_makes_every_special_character_literal(text):
    out = md(text)
    assert "\n" not in out
    # unescaping per CommonMark gives back the text exactly (line breaks become spaces)
    assert _ESCAPED.sub(r"\1", out) == text.replace("\n", " ")
    # and no active character is left unescaped
    bare = _ESCAPED.sub("", out)
    assert not (set(bare) & _ACTIVE), sorted(set(bare) & _ACTIVE)


@pytest.mark.parametrize("text", HOSTILE)
def test_html_escaping(text):
    out = html_text(text)
    assert not set(out) & set("<>\"'")
    assert html.unescape(out) == text


@pytest.mark.parametrize("text", HOSTILE)
def test_plotly_escaping(text):
    out = plotly_text(text)
    assert not set(out) & set("<>$\n")
    assert html.unescape(out) == text.replace("\n", " ")


@pytest.mark.parametrize("text", HOSTILE + ["``a`b``", "`start", "end`"])
def test_inline_code_cannot_be_broken_out_of(text):
    out = code_inline(text)
    fence = re.match(r"`+", out).group(0)
    inner = out[len(fence):-len(fence)]
    assert out.endswith(fence)
    # the fence is longer than any run of backticks inside
    assert all(len(run) < len(fence) for run in re.findall(r"`+", inner))
    assert inner.strip(" ") == text.replace("\n", " ").strip(" ") or inner == text


# -------------------------------------------------------------- charts

GROUPS = [HOSTILE[0], HOSTILE[1], HOSTILE[2], HOSTILE[4], HOSTILE[16]]


def _data():
    """Five groups with hostile names in columns with hostile names; the first group has
    one observation (no no-pooling line of its own)."""
    rng = np.random.default_rng(1)
    rows = []
    for i, g in enumerate(GROUPS):
        for x in range(1 if i == 0 else 4):
            rows.append({"<b>Reaction</b>": 250.0 + 10 * i + (10 + i) * x + rng.normal(0, 3),
                         "$Days$": float(x), "<i>Subject</i>": g})
    return pd.DataFrame(rows)


def _estimates(predictor="$Days$"):
    """The pooling estimates of :func:`_data`, fitted as the app fits them."""
    import lmmcore

    return lmmcore.pooling_estimates(_data(), "<b>Reaction</b>", predictor, "<i>Subject</i>",
                                     random="intercept+slope" if predictor else "intercept")


# Keys whose strings plotly draws as (pseudo-HTML) text.
_RENDERED = {"text", "title", "name", "hovertemplate", "texttemplate", "ticktext"}


def _rendered_strings(obj, key=None, out=None):
    """Every string in a figure's JSON that plotly renders, with categorical axis values."""
    out = [] if out is None else out
    if isinstance(obj, dict):
        for k, v in obj.items():
            _rendered_strings(v, k, out)
    elif isinstance(obj, (list, tuple, np.ndarray)):
        for v in obj:
            _rendered_strings(v, key, out)
    elif isinstance(obj, str) and key in _RENDERED | {"x", "y"}:
        out.append((key, obj))
    return out


def _check_figure(fig):
    spec = fig.to_plotly_json()
    problems = [(k, s) for k, s in _rendered_strings(spec)
                if "<script" in s or "<img" in s or "<b>bold" in s or "<i>Subject" in s
                or "<b>Reaction" in s or re.search(r"(?<!&#36;)\$(x\^2|Days)\$", s)]
    # hover templates that pull raw user text in from customdata/text are drawn as HTML too
    for trace in spec["data"]:
        template = trace.get("hovertemplate") or ""
        refs = re.findall(r"%\{(customdata|text)(?:\[(\d+)\])?", template)
        for field, index in refs:
            values = trace.get(field)
            if values is None:
                continue
            values = np.asarray(values, dtype=object)
            if index and values.ndim == 2:
                values = values[:, int(index)]
            raw = [v for v in values.ravel() if isinstance(v, str) and v in GROUPS
                   and plotly_text(v) != v]
            if raw:
                problems.append((f"hovertemplate shows raw {field}", raw[0]))
    return problems


def test_shrinkage_1d_labels_are_escaped():
    from explorer import charts

    fig = charts.shrinkage_1d(_estimates(predictor=None), lecture=False)
    assert _check_figure(fig) == []
    assert any(plotly_text(HOSTILE[0]) in s for _, s in _rendered_strings(fig.to_plotly_json()))


def test_shrinkage_2d_labels_are_escaped():
    from explorer import charts

    est = _estimates()
    assert not est.own_estimate[GROUPS[0]]  # drawn as a labelled point, not an arrow
    fig = charts.shrinkage_2d(est, None, lecture=False)
    assert _check_figure(fig) == []


def test_pooling_panels_labels_are_escaped():
    from explorer import charts

    data = _data()
    few = pd.Series({g: True for g in GROUPS})
    fig = charts.pooling_panels(data, _estimates(), GROUPS, few, lecture=True)
    assert _check_figure(fig) == []


def test_pooling_means_labels_are_escaped():
    from explorer import charts

    data = _data()
    few = pd.Series({g: False for g in GROUPS})
    fig = charts.pooling_means(data, _estimates(predictor=None), GROUPS, few, lecture=False)
    assert _check_figure(fig) == []
