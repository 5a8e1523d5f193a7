"""Every chart's look in one place: Okabe-Ito colours, shapes per pooling method, lecture mode.

Figures are drawn from lmmcore's outputs (estimates, contours, fitted values); nothing
here computes a statistic.  Every label that can hold user text goes through
:func:`explorer.escape.plotly_text`.  :func:`show` renders a figure with the modebar's
camera button set to save PNG or SVG (plotly draws both in the browser: no kaleido).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.basedatatypes import BaseFigure
from plotly.subplots import make_subplots

from explorer.escape import plotly_text as esc

# Every figure here uses plotly's "simple_white" look.  Made the default rather than set per
# figure: plotly applies its default template without validating it again, whereas
# ``update_layout(template=...)`` validates and copies the whole template (~9 ms a figure,
# more than the traces).  This process draws no other plotly figures.
pio.templates.default = "simple_white"

# Okabe & Ito (2008), "Color Universal Design".
OKABE_ITO = {
    "orange": "#E69F00", "sky": "#56B4E9", "green": "#009E73", "yellow": "#F0E442",
    "blue": "#0072B2", "vermillion": "#D55E00", "purple": "#CC79A7", "black": "#000000",
}
DATA_COLOUR = "#555555"

# The same colour, line dash and marker shape for each pooling method on every page.
METHODS = {
    "complete": {"label": "complete pooling (one lm)", "colour": OKABE_ITO["orange"],
                 "dash": "dash", "symbol": "square"},
    "no": {"label": "no pooling (lm per group)", "colour": OKABE_ITO["blue"],
           "dash": "dot", "symbol": "circle"},
    "partial": {"label": "partial pooling (lmer)", "colour": OKABE_ITO["vermillion"],
                "dash": "solid", "symbol": "diamond"},
}


def method_styles(family: str = "gaussian") -> dict:
    """:data:`METHODS`, labelled glm and glmer for a binomial or Poisson family."""
    if family == "gaussian":
        return METHODS
    import re
    return {m: {**st, "label": re.sub(r"\b(lmer|lm)\b", r"g\1", st["label"])}
            for m, st in METHODS.items()}


FIXED = {"label": "fixed effects (partial pooling average)", "colour": OKABE_ITO["black"],
         "symbol": "x"}
# Simulated data only: the groups' true values (drawn in black, a star: none of the methods).
TRUTH = {"label": "truth (simulated)", "colour": OKABE_ITO["black"], "dash": "longdashdot",
         "symbol": "star"}
CONTOUR_COLOUR = OKABE_ITO["sky"]
MODEL_COLOURS = {"lm": OKABE_ITO["orange"], "lmer": OKABE_ITO["vermillion"]}


def sizes(lecture: bool) -> dict:
    """Font, line and marker sizes: lecture mode is for the back row of a lecture hall."""
    if lecture:
        return {"font": 22, "title": 26, "line": 4.5, "marker": 13, "data_marker": 10,
                "panel_title": 20, "height": 1.35}
    return {"font": 14, "title": 17, "line": 2.2, "marker": 8, "data_marker": 6,
            "panel_title": 14, "height": 1.0}


def _layout(fig: go.Figure, lecture: bool, height: int, title: str | None = None) -> go.Figure:
    s = sizes(lecture)
    fig.update_layout(
        font={"size": s["font"], "family": "Arial, Helvetica, sans-serif"},
        height=int(height * s["height"]),
        margin={"l": 10, "r": 10, "t": 60 if title else 30, "b": 10},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "left", "x": 0,
                "font": {"size": s["font"]}},
        hoverlabel={"font": {"size": s["font"]}},
    )
    if title:
        fig.update_layout(title={"text": title, "font": {"size": s["title"]}, "x": 0, "xanchor": "left"})
    fig.update_annotations(font_size=s["panel_title"])
    return fig


def plot_config(name: str, image_format: str = "png") -> dict:
    """Plotly config: the camera button saves ``name``.png or .svg at double resolution."""
    fmt = "svg" if image_format == "svg" else "png"
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)[:60] or "chart"
    return {
        "displaylogo": False,
        "toImageButtonOptions": {"format": fmt, "filename": safe, "scale": 2},
        "modeBarButtonsToRemove": ["lasso2d", "select2d", "autoScale2d"],
    }


def show(fig: go.Figure, key: str, name: str) -> None:
    """Render a figure with the app's download format (``app.image_format``)."""
    import streamlit as st

    from explorer.state import APP_IMAGE_FORMAT
    st.plotly_chart(fig, key=key, config=plot_config(name, st.session_state.get(APP_IMAGE_FORMAT, "png")),
                    width="stretch", theme=None)


class _Built(BaseFigure):
    """A figure built and validated earlier, held as its dict.

    ``st.plotly_chart`` takes a plotly figure's ``to_dict()`` as it is, but validates a
    plain dict again by building a new ``go.Figure`` from it, which costs as much as
    drawing the figure did; this wrapper hands it the stored dict.  (BaseFigure's own
    constructor is not called: there is nothing to validate again.)
    """

    def __init__(self, spec: dict):  # noqa: D107 - no super().__init__ on purpose
        self._spec = spec

    def to_dict(self) -> dict:
        return self._spec


_spec_cache = None


def _built_spec(cache_key: tuple, build) -> dict:
    global _spec_cache
    if _spec_cache is None:  # made on first use: the figure functions work without Streamlit
        import streamlit as st

        @st.cache_data(max_entries=128, show_spinner=False)
        def figure_spec(cache_key: tuple, _build) -> dict:
            return _build().to_dict()

        _spec_cache = figure_spec
    return _spec_cache(cache_key, build)


def show_cached(cache_key: tuple, build, key: str, name: str) -> None:
    """Render ``build()``'s figure, built once per ``cache_key`` and kept (bounded cache).

    Building a plotly figure costs far more CPU than the fit behind it (every property
    is validated), and a page rerun draws the same figures again; so the figure's dict
    is cached under ``cache_key``, a tuple of short strings and numbers that must name
    everything the figure depends on (the table's digest, the model, the columns, the
    groups shown, lecture mode).  ``build`` is called only on a miss.
    """
    show(_Built(_built_spec(cache_key, build)), key, name)


def explained(text: str, lecture: bool, draw) -> None:
    """A chart with its explanation (markdown): above it, or below it on a projector, where
    the chart must start high enough to fill half the first screen.  ``draw()`` shows the chart."""
    import streamlit as st

    if not lecture:
        st.markdown(text)
    draw()
    if lecture:
        st.markdown(text)


def _line(a: float, b: float, x0: float, x1: float) -> tuple[list, list]:
    return [x0, x1], [a + b * x0, a + b * x1]


# ------------------------------------------------------------------ pooling


# A factor's conditions sit at 0, 1, ... on the x axis; a method's means are drawn this far
# apart (in conditions) so that equal means do not hide each other, the data between them.
METHOD_OFFSET, DATA_SPREAD = 0.07, 0.16


# A glmer's line on the data's scale (probability, count) is a curve: drawn through this many points.
CURVE_POINTS = 41


def link_names(estimates) -> tuple[str, str]:
    """A non-Gaussian family's (data-scale, link-scale) axis titles for the response."""
    r = estimates.response
    if getattr(estimates, "trials_response", False):
        return f"proportion of successes, {r}", f"log-odds of success, {r}"
    if estimates.family == "binomial":
        return f"P({r} = 1)", f"log-odds of {r} = 1"
    return f"expected {r}", f"log of expected {r}"


def _method_curves(estimates, methods, x0: float, x1: float, link_scale: bool = True) -> dict:
    """What each method draws in each group's panel: {method: {group: (xs, ys, customdata)}}.

    A numeric predictor: the method's line over the predictor's range, ``customdata``
    its (intercept, slope).  A factor: the group's mean in each condition
    (``condition_means``), at the conditions' positions shifted by the method's offset,
    ``customdata`` (condition, mean).  NaN where the method gives the group no estimate.
    A glm/glmer's estimates (link scale) with ``link_scale`` False: the line through the
    inverse link (a curve of :data:`CURVE_POINTS`), ``customdata`` still the link-scale
    coefficients.
    """
    inverse = None
    if getattr(estimates, "family", "gaussian") != "gaussian" and not link_scale:
        from lmmcore.glmm import Family
        inverse = Family(estimates.family).linkinv
    out = {}
    # no pooling's slope aliased with the groups (R: NA): each group's own line is flat
    flat_no_pooling = not estimates.is_factor and estimates.slope_aliased
    for k, method in enumerate(methods):
        rows = estimates.method(method)
        if estimates.is_factor:
            means = estimates.condition_means(method)
            shift = (k - (len(methods) - 1) / 2) * METHOD_OFFSET
            xs = [i + shift for i in range(len(estimates.levels))]
            out[method] = {g: (xs, list(means.loc[g]), [[lv, v] for lv, v in zip(estimates.levels, means.loc[g])])
                           for g in means.index}
            continue
        out[method] = {}
        for g in rows.index:
            a, b = float(rows.at[g, "intercept"]), float(rows.at[g, "slope"])
            drawn_b = 0.0 if method == "no" and flat_no_pooling else b
            if inverse is None:
                xs, ys = _line(a, drawn_b, x0, x1)
            else:
                xs = np.linspace(x0, x1, CURVE_POINTS)
                ys = (inverse(a + drawn_b * xs) if np.isfinite([a, drawn_b]).all()
                      else np.full(CURVE_POINTS, np.nan))
                xs, ys = xs.tolist(), ys.tolist()
            out[method][g] = (xs, ys, [[a, b, g]] * len(xs))
    return out


def pooling_panels(data: pd.DataFrame, estimates, groups: list, few: pd.Series, lecture: bool,
                   ncols: int = 4, styles: dict | None = None,
                   truth: pd.DataFrame | None = None, link_scale: bool = False) -> go.Figure:
    """A panel per group: its data and each method's line (a numeric predictor) or
    condition means joined by a line (a factor).

    ``estimates`` is ``lmmcore.pooling_estimates``' result (its columns name the axes);
    each trace holds what it draws in ``customdata`` (see :func:`_method_curves`) and
    ``meta`` names its method and group.  ``styles`` (default :data:`METHODS`) gives
    each method drawn its label, colour, dash and marker: a method of the estimates
    without a style is not drawn, so another kind of estimate (a simulation's truth) is
    drawn by adding its style.  ``truth`` (simulated data: intercept and slope by
    group, ``lmmcore.simulate_groups``) adds each group's true line.

    Binary or count data (``estimates.family`` not ``"gaussian"``): by default each line
    is drawn through the inverse link over the data (probability or count scale);
    ``link_scale`` True draws the estimates' own straight lines on the logit/log scale,
    without the data (0 and 1 have no finite log-odds).
    """
    s = sizes(lecture)
    glm = getattr(estimates, "family", "gaussian") != "gaussian"
    styles = method_styles(getattr(estimates, "family", "gaussian")) if styles is None else styles
    response, predictor, group = estimates.response, estimates.predictor, estimates.group
    counts = estimates.n
    methods = [m for m in styles if m in estimates.methods]
    n = max(1, len(groups))
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    titles = []
    for g in groups:
        count = int(counts.get(str(g), 0))
        flag = " ▲ few obs" if bool(few.get(str(g), False)) else ""
        titles.append(f"{esc(g)} (n={count}){flag}")
    height = 110 + 230 * nrows
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=titles, shared_xaxes=True,
                        shared_yaxes=True, horizontal_spacing=0.03,
                        vertical_spacing=min(0.3, 45 / height) if nrows > 1 else 0.0)
    if estimates.is_factor:
        # Each observation at its condition's position, spread evenly within its cell.
        position = {lv: i for i, lv in enumerate(estimates.levels)}
        cond = data[predictor].astype(str).map(position)
        cell = data[group].astype(str) + "\x00" + cond.astype(str)
        rank = cell.groupby(cell).cumcount()
        size = cell.map(cell.value_counts())
        x = cond + DATA_SPREAD * ((rank + 0.5) / size - 0.5)
        x0, x1 = -0.5, len(estimates.levels) - 0.5
    else:
        x = pd.to_numeric(data[predictor], errors="coerce")
        x0, x1 = float(np.nanmin(x)), float(np.nanmax(x))
    curves = _method_curves(estimates, methods, x0, x1, link_scale)
    gcol = data[group].astype(str)
    observed = estimates.observed(data)  # a cbind response: the proportion of successes
    shown = set()
    for i, g in enumerate(groups):
        r, c = i // ncols + 1, i % ncols + 1
        mask = gcol == str(g)
        if not (glm and link_scale):
            fig.add_trace(go.Scatter(
                x=x[mask], y=observed[mask], mode="markers", name="data",
                legendgroup="data", showlegend="data" not in shown,
                marker={"color": DATA_COLOUR, "size": s["data_marker"], "opacity": 0.75},
                hovertemplate=f"{esc(group)} {esc(g)}<br>%{{x}}, %{{y}}<extra></extra>"), row=r, col=c)
            shown.add("data")
        for method in methods:
            style = styles[method]
            if str(g) not in curves[method]:
                continue
            xs, ys, custom = curves[method][str(g)]
            if not np.isfinite(ys).all():
                if estimates.is_factor:  # the panel is narrow: which conditions; the page gives the note
                    missing = [lv for lv, v in zip(estimates.levels, ys) if not np.isfinite(v)]
                    text = f"no {method}-pooling mean at {', '.join(missing)}"
                else:
                    note = estimates.method(method).at[str(g), "note"]
                    note = note if isinstance(note, str) else ""
                    text = f"no {method}-pooling line" + (f": {note}" if note else "")
                if glm and not estimates.is_factor and not link_scale:
                    # Separation: the group's own estimate is infinite.  A marker at the
                    # panel's edge the data push it to (all 1: the top; all 0: the bottom),
                    # its hover giving the note, never a huge number.
                    edge = float(observed[mask].mean() >= 0.5)
                    fig.add_trace(go.Scatter(
                        x=[x0], y=[edge if estimates.family == "binomial" else 0.0],
                        mode="markers", showlegend=False, cliponaxis=False,
                        meta={"method": method, "group": str(g), "separation": True},
                        marker={"symbol": "triangle-right", "size": s["marker"] + 4, "color": style["colour"]},
                        hovertemplate=esc(text) + "<extra></extra>"), row=r, col=c)
                    text = "no own line: separation"
                fig.add_annotation(text=esc(text),
                                   xref="x domain", yref="y domain", x=0.02, y=0.02, showarrow=False,
                                   xanchor="left", yanchor="bottom", row=r, col=c,
                                   font={"size": max(10, s["font"] - 4), "color": style["colour"]})
                if not np.isfinite(ys).any():
                    continue
            hover = ("%{customdata[0]}: mean %{customdata[1]:.4g}" if estimates.is_factor
                     else "intercept %{customdata[0]:.4g}, slope %{customdata[1]:.4g}")
            fig.add_trace(go.Scatter(  # a curve (inverse link): markers at every point would crowd it
                x=xs, y=ys, mode="lines+markers" if len(xs) <= len(estimates.levels or ()) + 2 else "lines",
                name=style["label"], legendgroup=method,
                showlegend=method not in shown, customdata=custom,
                meta={"method": method, "group": str(g)},
                line={"color": style["colour"], "dash": style["dash"], "width": s["line"]},
                marker={"symbol": style["symbol"], "size": s["marker"], "color": style["colour"]},
                hovertemplate=f"{style['label']}<br>{esc(g)}: {hover}<extra></extra>"), row=r, col=c)
            shown.add(method)
        if truth is not None and str(g) in truth.index:
            a, b = float(truth.loc[str(g), "intercept"]), float(truth.loc[str(g), "slope"])
            xs, ys = _line(a, b, x0, x1)
            fig.add_trace(go.Scatter(
                x=xs, y=ys, mode="lines+markers", name=TRUTH["label"], legendgroup="truth",
                showlegend="truth" not in shown, meta={"method": "truth", "group": str(g)},
                customdata=[[a, b, str(g)], [a, b, str(g)]],
                line={"color": TRUTH["colour"], "dash": TRUTH["dash"], "width": s["line"] / 1.4},
                marker={"symbol": TRUTH["symbol"], "size": s["marker"] + 2, "color": TRUTH["colour"]},
                hovertemplate=(f"truth<br>{esc(g)}: intercept %{{customdata[0]:.4g}}, "
                               "slope %{customdata[1]:.4g}<extra></extra>")), row=r, col=c)
            shown.add("truth")
    fig.update_xaxes(title_text=None, showgrid=True)
    if estimates.is_factor:
        # No fixed x range: with one, plotly.js (2.x) leaves the shared y axes at their
        # empty default instead of fitting the data.
        fig.update_xaxes(tickvals=list(range(len(estimates.levels))),
                         ticktext=[esc(lv) for lv in estimates.levels])
    fig.update_yaxes(title_text=None, showgrid=True)
    for c in range(1, ncols + 1):
        fig.update_xaxes(title_text=esc(predictor), row=nrows, col=c)
    ytitle = link_names(estimates)[1 if link_scale else 0] if glm else response
    for r in range(1, nrows + 1):
        fig.update_yaxes(title_text=esc(ytitle), row=r, col=1)
    _layout(fig, lecture, height=height)
    return _legend_above_panel_titles(fig, lecture)


def _legend_above_panel_titles(fig: go.Figure, lecture: bool) -> go.Figure:
    """Lift the legend clear of the first row's panel titles.

    Panel titles are annotations just above the plot area, where the legend's default
    place (paper y 1.02) also is; a legend that wraps to two lines (lecture mode) then
    covers them.  The legend's bottom goes one title height (in pixels, converted to paper
    units) above the plot area; plotly grows the top margin to fit however many lines the
    legend takes.
    """
    s = sizes(lecture)
    margin = fig.layout.margin
    plot_px = max(100, int(fig.layout.height) - int(margin.t or 0) - int(margin.b or 0))
    title_px = s["panel_title"] * 1.5 + 8
    fig.update_layout(legend={"yref": "paper", "y": 1 + title_px / plot_px, "yanchor": "bottom"},
                      margin={"t": int(title_px) + 10})
    return fig


def pooling_means(data: pd.DataFrame, estimates, groups: list, few: pd.Series, lecture: bool,
                  link_scale: bool = False) -> go.Figure:
    """Intercept-only pooling: per group its data, group mean (no pooling), lmer estimate
    (partial pooling) and the grand mean (complete pooling), one row per group.

    Binary or count data: the link-scale intercepts through the inverse link (a
    probability or an expected count) beside the data, or with ``link_scale`` the
    intercepts themselves, without the data.  A group without its own estimate
    (separation) gets a marker at the axis' edge whose hover gives the note.
    """
    s = sizes(lecture)
    glm = getattr(estimates, "family", "gaussian") != "gaussian"
    inverse = (lambda v: v)
    if glm and not link_scale:
        from lmmcore.glmm import Family
        inverse = Family(estimates.family).linkinv
    response, group = estimates.response, estimates.group
    counts = estimates.n
    fig = go.Figure()
    gcol = data[group].astype(str)
    labels = {}
    for g in groups:
        count = int(counts.get(str(g), 0))
        labels[str(g)] = f"{esc(g)} (n={count}){' ▲' if bool(few.get(str(g), False)) else ''}"
    observed = estimates.observed(data)  # a cbind response: the proportion of successes
    sub = data[gcol.isin([str(g) for g in groups])]
    if not (glm and link_scale):
        fig.add_trace(go.Scatter(
            x=observed[sub.index], y=[labels[str(v)] for v in sub[group].astype(str)], mode="markers",
            name="data", marker={"color": DATA_COLOUR, "size": s["data_marker"], "opacity": 0.6},
            hovertemplate="%{y}: %{x}<extra></extra>"))
    for method, style in method_styles(getattr(estimates, "family", "gaussian")).items():
        if method not in estimates.methods:
            continue
        rows = estimates.method(method).reset_index()
        rows = rows[rows["group"].isin(labels)]
        if rows.empty:
            continue
        if method == "complete":
            a = float(inverse(np.asarray(float(rows["intercept"].iloc[0]))))
            fig.add_vline(x=a, line={"color": style["colour"], "dash": style["dash"], "width": s["line"]})
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=style["label"],
                                     line={"color": style["colour"], "dash": style["dash"], "width": s["line"]},
                                     customdata=[[a]], meta={"method": method}))
            continue
        missing = rows[~np.isfinite(rows["intercept"].to_numpy(dtype=float))]
        if glm and not missing.empty:
            # Separation: no finite estimate; a marker at the axis' left edge, the note on hover.
            notes = [n if isinstance(n, str) else "no estimate" for n in missing["note"]]
            y_mean = observed.groupby(gcol).mean()
            edges = [float(y_mean.get(str(v), 0.0) >= 0.5) if estimates.family == "binomial" else 0.0
                     for v in missing["group"].astype(str)]
            fig.add_trace(go.Scatter(
                x=edges, y=[labels[str(v)] for v in missing["group"].astype(str)],
                mode="markers", name=f"{style['label']}: none (separation)", xaxis="x",
                meta={"method": method, "separation": True}, cliponaxis=False,
                text=[esc(n) for n in notes],
                marker={"symbol": "triangle-left", "size": s["marker"] + 4, "color": style["colour"]},
                hovertemplate="%{y}: %{text}<extra></extra>"))
        x = inverse(rows["intercept"].to_numpy(dtype=float))
        fig.add_trace(go.Scatter(
            x=x, y=[labels[str(v)] for v in rows["group"].astype(str)], mode="markers",
            name=style["label"], customdata=rows[["intercept"]].to_numpy(), meta={"method": method},
            marker={"symbol": style["symbol"], "size": s["marker"] + 4, "color": style["colour"],
                    "line": {"width": 1, "color": "white"}},
            hovertemplate=f"{style['label']}<br>%{{y}}: %{{x:.4g}}<extra></extra>"))
    fig.update_yaxes(categoryorder="array", categoryarray=[labels[str(g)] for g in groups][::-1],
                     title_text=esc(group))
    xtitle = link_names(estimates)[1 if link_scale else 0] if glm else response
    fig.update_xaxes(title_text=esc(xtitle), showgrid=True)
    return _layout(fig, lecture, height=140 + 34 * len(groups))


# ------------------------------------------------------------------ shrinkage


def coefficient_title(estimates, coefficient: str) -> str:
    """An axis title for a coefficient: ``slope of Days``; a factor's condition effect
    says which two conditions it compares (``stages3: s3 − s1``)."""
    if coefficient == "intercept":
        return "intercept"
    if estimates.is_factor:
        level = estimates.levels[estimates.coefficients.index(coefficient)]
        return f"{esc(coefficient)}: {esc(level)} − {esc(estimates.levels[0])}"
    return f"slope of {esc(estimates.predictor)}"


def shrinkage_2d(estimates, contours: pd.DataFrame | None, lecture: bool, highlight=(),
                 coefficient: str | None = None, truth: pd.DataFrame | None = None) -> go.Figure:
    """Arrows from each group's no-pooling (intercept, coefficient) to its partial-pooling
    one, over the contours of the fitted random-effects distribution
    (``lmmcore.re_contours`` of the same coefficient; None draws none) and the fixed effects.

    ``coefficient`` is the y axis: a numeric predictor's ``slope`` or a factor's
    condition effect (``"stages3"``); by default the first after the intercept.

    ``highlight``: groups drawn strong and named at their no-pooling point (the outer end
    of the arrow, away from the crowded middle); with any given, the other groups' points
    and arrows are drawn faint, but every arrow is still drawn.  ``truth`` (simulated data)
    adds each group's true (intercept, slope) as a third marker, joined to its
    partial-pooling estimate by a thin line: the miss.
    """
    s = sizes(lecture)
    y = coefficient if coefficient is not None else estimates.coefficients[1]
    strong = {str(g) for g in highlight}
    fixef = (float(estimates.fixef["intercept"]), float(estimates.fixef[y]))
    fig = go.Figure()
    if contours is not None and len(contours):
        for i, (level, ring) in enumerate(contours.groupby("level", sort=True)):
            fig.add_trace(go.Scatter(
                x=ring["intercept"], y=ring["slope"], mode="lines", name="random-effects contours",
                legendgroup="contours", showlegend=i == 0, meta={"level": float(level)},
                line={"color": CONTOUR_COLOUR, "width": max(1.0, s["line"] / 2)},
                hovertemplate=f"contour {float(level):g}<extra></extra>"))
    # The chosen coefficient as "slope": the contours' and the label placer's name for the y axis.
    no, part = (estimates.method(m).rename(columns={y: "slope"})[["intercept", "slope", "n"]]
                for m in ("no", "partial"))
    own = estimates.own_estimate
    both = [g for g in part.index if own.get(g, False)]
    lonely = [g for g in part.index if g not in both]
    def faint(g) -> bool:
        return bool(strong) and g not in strong and g not in lonely

    for g in both:
        fig.add_annotation(x=part.loc[g, "intercept"], y=part.loc[g, "slope"], ax=no.loc[g, "intercept"],
                           ay=no.loc[g, "slope"], xref="x", yref="y", axref="x", ayref="y", text="",
                           showarrow=True, arrowhead=2, arrowsize=1.2,
                           arrowwidth=max(1.0, s["line"] / (2.4 if faint(g) else 1.6)),
                           arrowcolor="#d4d4d4" if faint(g) else "#555555" if strong else "#888888",
                           standoff=s["marker"] / 2)
    nost = method_styles(getattr(estimates, "family", "gaussian"))["no"]
    fig.add_trace(go.Scatter(
        x=no.loc[both, "intercept"], y=no.loc[both, "slope"], mode="markers", name=nost["label"],
        text=[esc(g) for g in both], customdata=np.array(both, dtype=object).reshape(-1, 1),
        meta={"method": "no"},
        marker={"symbol": nost["symbol"], "size": s["marker"], "color": nost["colour"],
                "opacity": [0.25 if faint(g) else 1.0 for g in both]},
        hovertemplate=f"%{{text}}: intercept %{{x:.4g}}, {esc(y)} %{{y:.4g}}<extra>no pooling</extra>"))
    pst = method_styles(getattr(estimates, "family", "gaussian"))["partial"]
    fig.add_trace(go.Scatter(
        x=part["intercept"], y=part["slope"], mode="markers", name=pst["label"],
        customdata=np.array(list(part.index), dtype=object).reshape(-1, 1), meta={"method": "partial"},
        hovertext=[esc(g) for g in part.index],
        marker={"symbol": pst["symbol"], "size": s["marker"] + 2, "color": pst["colour"],
                "opacity": [0.25 if faint(g) else 1.0 for g in part.index]},
        hovertemplate=f"%{{hovertext}}: intercept %{{x:.4g}}, {esc(y)} %{{y:.4g}}<extra>partial pooling</extra>"))
    if truth is not None:
        _add_truth_points(fig, truth, part, "intercept", y, s)
    named = [g for g in both if g in strong]
    if named:
        # Left of the average the label goes left, right of it right: outward, off the arrows.
        fig.add_trace(go.Scatter(
            x=no.loc[named, "intercept"], y=no.loc[named, "slope"], mode="text", showlegend=False,
            # An en space keeps the name off its marker.
            text=[f"{esc(g)}\u2002" if no.loc[g, "intercept"] < fixef[0] else f"\u2002{esc(g)}" for g in named],
            meta={"highlight": named}, hoverinfo="skip", cliponaxis=False,
            textposition=["middle left" if no.loc[g, "intercept"] < fixef[0] else "middle right"
                          for g in named],
            textfont={"size": s["font"], "color": "#222222"}))
    _label_lonely(fig, part, lonely, pd.concat([part[["intercept", "slope"]],
                                                no.loc[both, ["intercept", "slope"]]]), s)
    comp = estimates.method("complete").rename(columns={y: "slope"}) if "complete" in estimates.methods else None
    if comp is not None and len(comp):
        cst = METHODS["complete"]
        fig.add_trace(go.Scatter(
            x=[float(comp["intercept"].iloc[0])], y=[float(comp["slope"].iloc[0])], mode="markers",
            name=cst["label"], meta={"method": "complete"},
            # Open: the fixed effects usually sit almost on top of it.
            marker={"symbol": cst["symbol"] + "-open", "size": s["marker"] + 14, "color": cst["colour"],
                    "line": {"width": s["line"] + 0.5}}))
    fig.add_trace(go.Scatter(
        x=[fixef[0]], y=[fixef[1]], mode="markers", name=FIXED["label"], meta={"method": "fixed"},
        marker={"symbol": FIXED["symbol"], "size": s["marker"] + 4, "color": FIXED["colour"],
                "line": {"width": 1, "color": "white"}}))
    fig.update_xaxes(title_text="intercept", showgrid=True)
    fig.update_yaxes(title_text=coefficient_title(estimates, y), showgrid=True)
    _layout(fig, lecture, height=640)
    # The legend under the plot: above it, four entries would push the arrows off a projector.
    fig.update_layout(legend={"orientation": "h", "yanchor": "top", "y": -0.12, "x": 0})
    return fig


def _label_lonely(fig: go.Figure, part: pd.DataFrame, lonely: list, others: pd.DataFrame,
                  s: dict) -> None:
    """Name each group without a no-pooling estimate beside its partial-pooling point.

    Such groups shrink to near the middle, where the other points crowd: each label sits
    at the end of a leader line, in whichever of eight directions leaves it (and the
    line's midpoint) furthest from every other point, in rough screen units (both axes
    taken as about 500 px).  ``others`` holds every plotted (intercept, slope).
    """
    if not lonely:
        return
    pts = others[["intercept", "slope"]].astype(float).to_numpy()
    pts = pts[np.isfinite(pts).all(axis=1)]
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    screen = (pts - lo) / span * 500.0
    colour = METHODS["partial"]["colour"]
    placed = []
    for i, g in enumerate(lonely):
        x, y = float(part.loc[g, "intercept"]), float(part.loc[g, "slope"])
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        here = (np.array([x, y]) - lo) / span * 500.0
        reach = 50 + s["font"] + 15 * i
        best, best_score = (-1.0, 1.0), -math.inf
        for k in range(8):
            angle = math.pi / 4 * k + math.pi / 8
            d = np.array([math.cos(angle), math.sin(angle)])
            label = here + d * (reach + s["font"])
            middle = here + d * reach / 2
            near = np.vstack([screen, np.array(placed).reshape(-1, 2)])
            score = min(np.hypot(*(near - label).T).min(), np.hypot(*(near - middle).T).min() * 1.5)
            if not (0 <= label[0] <= 500 and 0 <= label[1] <= 500):
                score -= 200  # a label off the data's range pushes the axes out
            if score > best_score:
                best, best_score = (float(d[0]), float(d[1])), score
        placed.append(here + np.array(best) * (reach + s["font"]))
        fig.add_annotation(
            x=x, y=y, xref="x", yref="y", text=esc(g), showarrow=True, arrowhead=0,
            arrowwidth=max(1.0, s["line"] / 2), arrowcolor=colour, standoff=s["marker"] / 2 + 2,
            # plotly's ay grows downward; the data's y grows upward
            ax=best[0] * reach, ay=-best[1] * reach,
            xanchor="left" if best[0] > 0.3 else "right" if best[0] < -0.3 else "center",
            yanchor="bottom" if best[1] > 0.3 else "top" if best[1] < -0.3 else "middle",
            font={"size": s["font"], "color": colour}, bgcolor="rgba(255,255,255,0.9)",
            bordercolor=colour, borderwidth=1, borderpad=3, name="lonely group")


def _add_truth_points(fig: go.Figure, truth: pd.DataFrame, part: pd.DataFrame, xcol: str, ycol,
                      s: dict) -> None:
    """The true values (simulated data) as stars, each tied to its partial-pooling estimate.

    ``ycol`` None: a 1-D plot whose y is each group's row label (``part["label"]``)."""
    groups = [g for g in part.index if g in truth.index]
    xs, ys = [], []
    for g in groups:
        py = part.loc[g, ycol] if ycol else part.loc[g, "label"]
        ty = truth.loc[g, ycol] if ycol else part.loc[g, "label"]
        xs += [part.loc[g, xcol], truth.loc[g, xcol], None]
        ys += [py, ty, None]
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", showlegend=False, hoverinfo="skip",
                             meta={"method": "truth_miss"},
                             line={"color": TRUTH["colour"], "width": 1, "dash": "dot"}))
    fig.add_trace(go.Scatter(
        x=truth.loc[groups, xcol], y=truth.loc[groups, ycol] if ycol else [part.loc[g, "label"] for g in groups],
        mode="markers", name=TRUTH["label"], meta={"method": "truth"},
        customdata=np.array(groups, dtype=object).reshape(-1, 1), hovertext=[esc(g) for g in groups],
        marker={"symbol": TRUTH["symbol"], "size": s["marker"] + 4, "color": TRUTH["colour"],
                "line": {"width": 1, "color": "white"}},
        hovertemplate="%{hovertext}: %{x:.4g}" + (", %{y:.4g}" if ycol else "") + "<extra>truth</extra>"))


def shrinkage_1d(estimates, lecture: bool, truth: pd.DataFrame | None = None) -> go.Figure:
    """One-coefficient shrinkage: each group's no-pooling estimate of the coefficient that
    varies by group to its partial-pooling estimate, arrows toward the fixed effect; rows
    labelled with the group size.  ``truth`` (simulated data) adds each group's true value
    as a star."""
    s = sizes(lecture)
    column = "slope" if estimates.varying == ("slope",) else "intercept"
    grand, group = float(estimates.fixef[column]), estimates.group
    no, part = estimates.method("no"), estimates.method("partial")
    order = list(part.sort_values(column).index)
    labels = {g: f"{esc(g)} (n={int(part.loc[g, 'n'])})" for g in order}
    fin = [g for g in order if g in no.index and np.isfinite(no.loc[g, column])]
    fig = go.Figure()
    # One layout update with every arrow: add_annotation validates and copies the whole
    # list each time (quadratic in the groups; the fit page redraws this on every slider move).
    fig.update_layout(annotations=[
        {"x": part.loc[g, column], "y": labels[g], "ax": no.loc[g, column], "ay": labels[g],
         "xref": "x", "yref": "y", "axref": "x", "ayref": "y", "text": "", "showarrow": True,
         "arrowhead": 2, "arrowwidth": max(1.0, s["line"] / 1.6), "arrowcolor": "#888888",
         "standoff": s["marker"] / 2} for g in fin])
    nost, pst = (method_styles(getattr(estimates, "family", "gaussian"))[m] for m in ("no", "partial"))
    fig.add_trace(go.Scatter(
        x=no.loc[fin, column], y=[labels[g] for g in fin], mode="markers", name=nost["label"],
        customdata=np.array(fin, dtype=object).reshape(-1, 1), meta={"method": "no"},
        marker={"symbol": nost["symbol"], "size": s["marker"] + 2, "color": nost["colour"]},
        hovertemplate="%{y}: %{x:.4g}<extra>no pooling</extra>"))
    fig.add_trace(go.Scatter(
        x=part.loc[order, column], y=[labels[g] for g in order], mode="markers", name=pst["label"],
        customdata=np.array(order, dtype=object).reshape(-1, 1), meta={"method": "partial"},
        marker={"symbol": pst["symbol"], "size": s["marker"] + 4, "color": pst["colour"]},
        hovertemplate="%{y}: %{x:.4g}<extra>partial pooling</extra>"))
    if truth is not None:
        _add_truth_points(fig, truth, part.assign(label=[labels[g] for g in part.index]), column, None, s)
    fig.add_vline(x=grand, line={"color": FIXED["colour"], "width": s["line"] / 1.5})
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=f"fixed effect (average {column})",
                             line={"color": FIXED["colour"], "width": s["line"] / 1.5}))
    fig.update_yaxes(categoryorder="array", categoryarray=[labels[g] for g in order], title_text=esc(group))
    fig.update_xaxes(title_text=column, showgrid=True)
    return _layout(fig, lecture, height=140 + 32 * len(order))


# ------------------------------------------------------------------ model diagnostics


def fitted_pairs(panels: dict, kind: str, response: str, lecture: bool) -> go.Figure:
    """Side-by-side panels for lm and lmer: ``kind`` "observed" (observed vs fitted, with
    the y = x line) or "residuals" (residuals vs fitted, with y = 0)."""
    s = sizes(lecture)
    names = list(panels)
    # One y scale for both panels: the point is how much less the lmer leaves over, and
    # panels scaled each to its own range would make the residuals look alike.
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=[esc(n) for n in names],
                        horizontal_spacing=0.06, shared_yaxes=True)
    for i, name in enumerate(names, start=1):
        fitted, observed, residuals = panels[name]
        y = observed if kind == "observed" else residuals
        colour = MODEL_COLOURS.get(name.split()[0], OKABE_ITO["blue"])
        fig.add_trace(go.Scatter(x=fitted, y=y, mode="markers", name=esc(name), showlegend=False,
                                 marker={"color": colour, "size": s["data_marker"], "opacity": 0.7}),
                      row=1, col=i)
        lo, hi = float(np.nanmin(fitted)), float(np.nanmax(fitted))
        if kind == "observed":
            lo2, hi2 = min(lo, float(np.nanmin(y))), max(hi, float(np.nanmax(y)))
            fig.add_trace(go.Scatter(x=[lo2, hi2], y=[lo2, hi2], mode="lines", showlegend=False,
                                     line={"color": "black", "dash": "dash", "width": s["line"] / 1.5}),
                          row=1, col=i)
        else:
            fig.add_hline(y=0, line={"color": "black", "dash": "dash", "width": s["line"] / 1.5}, row=1, col=i)
        fig.update_xaxes(title_text="fitted", row=1, col=i, showgrid=True)
        fig.update_yaxes(title_text=(esc(response) if kind == "observed" else "residual") if i == 1 else None,
                         row=1, col=i, showgrid=True)
    fig.update_xaxes(matches="x")  # the same fitted-value scale too: lm's narrow range shows as narrow
    return _layout(fig, lecture, height=420)


def qq_plot(qq: dict, lecture: bool, what: str = "residuals") -> go.Figure:
    """Normal Q-Q plot of residuals, or of ``what`` (points from
    ``lmmcore.teaching.qq_points``)."""
    s = sizes(lecture)
    t, r = qq["theoretical"], qq["sample"]
    a, b = qq["line"]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=t, y=r, mode="markers", name=what,
                             marker={"color": OKABE_ITO["vermillion"], "size": s["data_marker"]}))
    fig.add_trace(go.Scatter(x=[t[0], t[-1]], y=[a + b * t[0], a + b * t[-1]], mode="lines",
                             name="through the quartiles", line={"color": "black", "width": s["line"] / 1.5}))
    fig.update_xaxes(title_text="normal quantiles", showgrid=True)
    fig.update_yaxes(title_text=f"{what} quantiles" if what != "residuals" else "residual quantiles",
                     showgrid=True)
    return _layout(fig, lecture, height=420)


# Above this many levels a caterpillar plot stops naming each row: the names would
# overlap, and a chart thousands of pixels tall is no overview.  Hover still names them.
CATERPILLAR_NAMED = 40


def caterpillar_plot(table: pd.DataFrame, group: str, lecture: bool) -> go.Figure:
    """Random effects with conditional intervals, one panel per term, levels sorted.

    Up to :data:`CATERPILLAR_NAMED` levels each row is named; beyond that the plot keeps
    a fixed height, drops the row names (hover shows them) and thins the markers.
    """
    s = sizes(lecture)
    terms = list(dict.fromkeys(table["term"]))
    n = table["level"].nunique()
    named = n <= CATERPILLAR_NAMED
    fig = make_subplots(rows=1, cols=len(terms), subplot_titles=[esc(t) for t in terms],
                        horizontal_spacing=0.08)
    for i, term in enumerate(terms, start=1):
        t = table[table["term"] == term]
        fig.add_trace(go.Scatter(
            x=t["estimate"], y=[esc(v) for v in t["level"]], mode="markers", showlegend=False,
            error_x={"type": "data", "symmetric": False, "array": t["upper"] - t["estimate"],
                     "arrayminus": t["estimate"] - t["lower"],
                     "thickness": s["line"] / 1.5 if named else 1, "width": 3 if named else 0,
                     "color": OKABE_ITO["blue"]},
            marker={"color": OKABE_ITO["vermillion"], "size": s["marker"] if named else max(3, s["marker"] / 2),
                    "symbol": "diamond"},
            hovertemplate="%{y}: %{x:.4g}<extra></extra>"), row=1, col=i)
        fig.add_vline(x=0, line={"color": "black", "dash": "dash", "width": 1}, row=1, col=i)
        title = esc(group) if named else f"{esc(group)} ({n} levels, sorted; hover for names)"
        fig.update_yaxes(categoryorder="array", categoryarray=[esc(v) for v in t["level"]], row=1, col=i,
                         title_text=title if i == 1 else None, showticklabels=named,
                         ticks="" if not named else "outside")
        fig.update_xaxes(showgrid=True, row=1, col=i)
    # Final heights in pixels; _layout scales by the lecture factor, so divide it out.
    final = 160 + (30 if lecture else 20) * n if named else (760 if lecture else 640)
    return _layout(fig, lecture, height=round(final / s["height"]))


# ------------------------------------------------------------------ simulation


def rmse_distribution(runs: pd.DataFrame, column: str, reference: dict | None, lecture: bool) -> go.Figure:
    """Each method's RMSE over repeated simulations (``lmmcore.repeat_pooling_error``): one
    strip of runs per method, with a box, and dashed lines at the theory's reference values."""
    s = sizes(lecture)
    fig = go.Figure()
    for method, style in METHODS.items():
        v = runs.loc[runs["method"] == method, column].astype(float)
        fig.add_trace(go.Box(
            x=v, name=style["label"], orientation="h", boxpoints="all", jitter=0.5, pointpos=0,
            meta={"method": method}, marker={"color": style["colour"], "size": max(3, s["data_marker"] - 2),
                                             "opacity": 0.55, "symbol": style["symbol"]},
            line={"color": style["colour"], "width": s["line"] / 1.5}, fillcolor="rgba(0,0,0,0)",
            hovertemplate=f"{style['label']}: RMSE %{{x:.4g}}<extra></extra>"))
    # The reference values often lie close together: their labels go on separate lines above.
    line_px = s["font"] + 8
    for i, (method, (value, text)) in enumerate((reference or {}).items()):
        fig.add_vline(x=value, line={"color": METHODS[method]["colour"], "dash": "dash", "width": s["line"] / 1.3})
        fig.add_annotation(x=value, y=1.0, yref="paper", yshift=4 + i * line_px, text=esc(text), showarrow=False,
                           yanchor="bottom", xanchor="left",
                           font={"size": max(10, s["font"] - 3), "color": METHODS[method]["colour"]})
    fig.update_xaxes(title_text=f"RMSE of the group {column}s against the truth (one point per run)",
                     showgrid=True, rangemode="tozero")
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(showlegend=False)
    _layout(fig, lecture, height=330 + 30 * len(reference or {}))
    fig.update_layout(margin={"t": 20 + line_px * (len(reference or {}) + 1)})
    return fig


def cv_errors(table: pd.DataFrame, lecture: bool) -> go.Figure:
    """Prediction RMSE by method (``lmmcore.cross_validate``), a bar each, n in the label."""
    s = sizes(lecture)
    fig = go.Figure()
    for method in table.index:
        style = METHODS[method]
        row = table.loc[method]
        fig.add_trace(go.Bar(
            x=[float(row["rmse"])], y=[style["label"]], orientation="h", name=style["label"],
            meta={"method": method}, marker={"color": style["colour"]},
            text=[f"{float(row['rmse']):.4g} (n={int(row['n'])})"], textposition="auto",
            hovertemplate=f"{style['label']}: RMSE %{{x:.4g}}<extra></extra>"))
    fig.update_xaxes(title_text="prediction RMSE on held-out data (lower is better)", showgrid=True,
                     rangemode="tozero")
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(showlegend=False, uniformtext={"minsize": max(10, s["font"] - 4), "mode": "hide"})
    # On a projector the bars are the tab's main chart: tall enough to fill half the first screen.
    return _layout(fig, lecture, height=90 + (90 if lecture else 60) * len(table))


def simulated_copies(panels: dict, group: str, response: str, lecture: bool) -> go.Figure:
    """The observed response beside copies simulated from the fit (``MixedFit.simulate``):
    one panel each, the values of every group as a strip, so a difference in spread or
    shape between the data and the copies stands out.  ``panels``: title -> (groups, values)."""
    s = sizes(lecture)
    names = list(panels)
    ncols = 2
    nrows = math.ceil(len(names) / ncols)
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=[esc(n) for n in names], shared_yaxes=True,
                        shared_xaxes=True, vertical_spacing=0.12, horizontal_spacing=0.04)
    for i, name in enumerate(names):
        groups, values = panels[name]
        observed = i == 0
        fig.add_trace(go.Box(
            x=[esc(g) for g in groups], y=values, boxpoints="all", jitter=0.4, pointpos=0, showlegend=False,
            meta={"panel": name}, line={"color": DATA_COLOUR if observed else OKABE_ITO["blue"], "width": 1},
            fillcolor="rgba(0,0,0,0)",
            marker={"color": DATA_COLOUR if observed else OKABE_ITO["blue"], "size": max(3, s["data_marker"] - 2),
                    "opacity": 0.7},
            hovertemplate="%{x}: %{y:.4g}<extra></extra>"), row=i // ncols + 1, col=i % ncols + 1)
    for r in range(1, nrows + 1):
        fig.update_yaxes(title_text=esc(response), row=r, col=1)
    fig.update_xaxes(title_text=esc(group), row=nrows)
    fig.update_yaxes(showgrid=True)
    return _layout(fig, lecture, height=120 + 260 * nrows)


# ------------------------------------------------------------------ the lecture's two-condition pictures


def condition_panels(table: pd.DataFrame, condition: str, group: str, response: str, kind: str,
                     lecture: bool) -> go.Figure:
    """The lecture's df.original pictures, lm beside lmer, for a two-level condition within groups.

    ``table`` has one row per observation: ``condition``, ``group``, ``observed`` and, per
    model ``m`` in ("lm", "lmer"), ``fitted_m`` and ``residual_m`` (the fits' own values).
    ``kind`` "predictions": the data with the lm's one point per condition and the lmer's
    one line per group across the two conditions; "residuals": each model's residuals by
    condition, on one y scale ("much variance left" against "almost all explained").
    """
    s = sizes(lecture)
    levels = list(dict.fromkeys(table[condition]))
    x_of = {level: i for i, level in enumerate(levels)}
    x = table[condition].map(x_of).astype(float)
    # A fixed spread inside each condition, by group, so points do not hide one another.
    codes = pd.Categorical(table[group]).codes
    jitter = (codes / max(1, codes.max()) - 0.5) * 0.25 if len(table) else codes
    titles = ["lm: one prediction per condition", "lmer: one line per " + esc(group)]
    if kind == "residuals":
        titles = ["lm residuals", "lmer residuals"]
    fig = make_subplots(rows=1, cols=2, subplot_titles=titles, horizontal_spacing=0.06, shared_yaxes=True)
    for col, model in enumerate(("lm", "lmer"), start=1):
        colour = MODEL_COLOURS[model]
        if kind == "residuals":
            fig.add_trace(go.Scatter(x=x + jitter, y=table[f"residual_{model}"], mode="markers", showlegend=False,
                                     marker={"color": colour, "size": s["data_marker"], "opacity": 0.8},
                                     text=[esc(g) for g in table[group]],
                                     hovertemplate="%{text}: %{y:.3g}<extra></extra>"), row=1, col=col)
            fig.add_hline(y=0, line={"color": "black", "dash": "dash", "width": s["line"] / 1.5}, row=1, col=col)
            continue
        fig.add_trace(go.Scatter(x=x + jitter, y=table["observed"], mode="markers", showlegend=False,
                                 marker={"color": DATA_COLOUR, "size": s["data_marker"], "opacity": 0.5},
                                 hoverinfo="skip"), row=1, col=col)
        if model == "lm":
            means = table.groupby(condition, sort=False)["fitted_lm"].first()
            fig.add_trace(go.Scatter(x=[x_of[c] for c in means.index], y=means.to_numpy(), mode="markers+lines",
                                     showlegend=False, line={"color": colour, "width": s["line"]},
                                     marker={"color": colour, "size": s["marker"] * 1.6, "symbol": "square"}),
                          row=1, col=col)
        else:
            for _, rows in table.groupby(group, sort=False):
                rows = rows.sort_values(condition, key=lambda c: c.map(x_of))
                fig.add_trace(go.Scatter(x=rows[condition].map(x_of), y=rows["fitted_lmer"], mode="lines+markers",
                                         showlegend=False, opacity=0.75,
                                         line={"color": colour, "width": s["line"] / 2},
                                         marker={"color": colour, "size": s["data_marker"]},
                                         hoverinfo="skip"), row=1, col=col)
    fig.update_xaxes(tickvals=list(range(len(levels))), ticktext=[esc(f"{condition} {lv}") for lv in levels],
                     range=[-0.5, len(levels) - 0.5])
    fig.update_yaxes(title_text=esc(response) if kind == "predictions" else "residual", row=1, col=1)
    return _layout(fig, lecture, height=420)


# ------------------------------------------------------------------ how the fit works
# The criterion of theta (lmmcore.fitview): its curve, its parts, its contour map with the
# optimiser's path.  Colours: the criterion in black, ML beside REML in blue, the optimum
# in vermillion (the partial-pooling colour: the optimum is the fit), lme4's start in orange.

CRITERION_COLOURS = {"REML": OKABE_ITO["black"], "ML": OKABE_ITO["blue"]}
OPTIMUM_COLOUR = OKABE_ITO["vermillion"]
START_COLOUR = OKABE_ITO["orange"]


def criterion_curves(curves: list, theta_label: str, lecture: bool, current: float | None = None,
                     y_title: str = "profiled criterion", height: int = 430) -> go.Figure:
    """One or more criterion curves over one theta element, each optimum marked.

    ``curves``: dicts with ``label`` ("REML"/"ML"), ``theta``, ``value`` (arrays) and
    ``optimum`` (theta, value); ``current`` draws the slider's theta as a vertical line.
    """
    s = sizes(lecture)
    fig = go.Figure()
    for c in curves:
        colour = CRITERION_COLOURS.get(c["label"], OKABE_ITO["black"])
        y = np.where(np.isfinite(c["value"]), c["value"], np.nan)
        fig.add_trace(go.Scatter(
            x=c["theta"], y=y, mode="lines", name=esc(c.get("name", c["label"])),
            meta={"curve": c["label"]}, line={"color": colour, "width": s["line"]},
            hovertemplate=f"θ = %{{x:.4g}}<br>{esc(c['label'])} %{{y:.6g}}<extra></extra>"))
        t, v = c["optimum"]
        fig.add_trace(go.Scatter(
            x=[t], y=[v], mode="markers", name=f"optimum ({esc(c['label'])}): θ = {t:.4g}",
            meta={"optimum": c["label"]},
            marker={"symbol": "diamond", "size": s["marker"] + 6, "color": OPTIMUM_COLOUR,
                    "line": {"width": 1.5, "color": colour}},
            hovertemplate=f"optimum θ = %{{x:.5g}}<br>{esc(c['label'])} %{{y:.6g}}<extra></extra>"))
    if current is not None:
        fig.add_vline(x=current, line={"color": OKABE_ITO["sky"], "width": s["line"], "dash": "dash"})
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=f"your θ = {current:.3g}",
                                 line={"color": OKABE_ITO["sky"], "width": s["line"], "dash": "dash"}))
    fig.update_xaxes(title_text=esc(theta_label), showgrid=True, rangemode="tozero")
    fig.update_yaxes(title_text=esc(y_title), showgrid=True)
    return _layout(fig, lecture, height=height)


def criterion_parts(parts: pd.Series, optimum: pd.Series, labels: dict, lecture: bool) -> go.Figure:
    """How each part of the criterion differs from its value at the optimum, and the total.

    The parts are of very different sizes (the residual term is in the thousands, the
    log-determinant in tens), so the bars show changes: moving theta away from the
    optimum saves in one part and costs more in the other; the total is never below 0.
    """
    s = sizes(lecture)
    delta = parts - optimum.reindex(parts.index)
    now = list(parts.to_numpy(float)) + [float(parts.sum())]
    names = [f"{labels.get(k, k)} = {v:.5g}" for k, v in zip(parts.index, now)] + [f"criterion = {now[-1]:.5g}"]
    values = list(delta.to_numpy(float)) + [float(delta.sum())]
    colours = [OKABE_ITO["green"] if v < 0 else OKABE_ITO["vermillion"] for v in values]
    colours[-1] = OKABE_ITO["black"]
    fig = go.Figure(go.Bar(
        x=values, y=names, orientation="h", marker={"color": colours}, meta={"parts": list(parts.index)},
        customdata=np.array(now).reshape(-1, 1), text=[f"{v:+.3g}" for v in values], textposition="auto",
        hovertemplate="%{y}<br>change %{x:+.4g} (now %{customdata[0]:.6g})<extra></extra>"))
    fig.add_vline(x=0, line={"color": "#555555", "width": 1})
    if not np.any(np.abs(values) > 1e-9 * max(1.0, abs(now[-1]))):
        fig.add_annotation(text="θ is at the optimum: no change. Move the slider.", showarrow=False,
                           xref="paper", yref="paper", x=0.5, y=0.5, font={"size": s["font"]},
                           bgcolor="rgba(255,255,255,0.9)")
        fig.update_xaxes(range=[-1, 1])
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title_text="change from the optimum", showgrid=True)
    return _layout(fig, lecture, height=110 + 50 * len(names))


def criterion_contours(surface: dict, path: pd.DataFrame, optimum: tuple, start: tuple, lecture: bool,
                       height: int = 560) -> go.Figure:
    """The criterion over two theta elements (``lmmcore.fitview.criterion_surface``), its
    optimum, lme4's start and the optimiser's path projected onto the two elements.

    ``path`` has the two elements' columns and ``descent`` (the accepted way down); the
    other evaluations (line-search trials) are drawn as faint points.
    """
    s = sizes(lecture)
    xname, yname = surface["names"]
    z = np.asarray(surface["z"], float)
    finite = z[np.isfinite(z)]
    zmin = float(finite.min()) if finite.size else 0.0
    # Contours of the rise above the lowest grid point on a square-root scale: the valley
    # floor and the walls both get contour lines.
    rise = np.sqrt(np.clip(np.where(np.isfinite(z), z - zmin, np.nan), 0, None))
    fig = go.Figure(go.Contour(
        x=surface["x"], y=surface["y"], z=rise, colorscale="Blues", reversescale=True, ncontours=18,
        contours={"coloring": "heatmap", "showlines": True}, line={"width": 0.5},
        customdata=np.where(np.isfinite(z), z, np.nan), name="criterion",
        colorbar={"title": {"text": "√(criterion − lowest)", "side": "right"}, "thickness": 12},
        hovertemplate=f"{esc(xname)} %{{x:.3g}}<br>{esc(yname)} %{{y:.3g}}<br>criterion %{{customdata:.6g}}<extra></extra>"))
    x0, x1 = float(np.min(surface["x"])), float(np.max(surface["x"]))
    y0, y1 = float(np.min(surface["y"])), float(np.max(surface["y"]))
    inside = path[(path[xname] >= x0) & (path[xname] <= x1) & (path[yname] >= y0) & (path[yname] <= y1)]
    trials = inside[~inside["descent"]]
    fig.add_trace(go.Scatter(
        x=trials[xname], y=trials[yname], mode="markers", name="trial points (line searches)",
        meta={"path": "trials"}, marker={"color": "#777777", "size": s["marker"] - 2, "symbol": "circle-open"}))
    way = path[path["descent"]]
    fig.add_trace(go.Scatter(
        x=way[xname], y=way[yname], mode="lines+markers", name=f"optimiser's path ({len(way)} steps down)",
        meta={"path": "descent"}, line={"color": START_COLOUR, "width": s["line"]},
        marker={"color": START_COLOUR, "size": s["marker"]},
        customdata=way["criterion"], hovertemplate="%{x:.4g}, %{y:.4g}<br>criterion %{customdata:.6g}<extra></extra>"))
    fig.add_trace(go.Scatter(
        x=[start[0]], y=[start[1]], mode="markers+text", name="lme4's start", meta={"point": "start"},
        text=["start"], textposition="top right", cliponaxis=False,
        marker={"symbol": "square", "size": s["marker"] + 6, "color": START_COLOUR}))
    fig.add_trace(go.Scatter(
        x=[optimum[0]], y=[optimum[1]], mode="markers", name="optimum", meta={"point": "optimum"},
        marker={"symbol": "diamond", "size": s["marker"] + 8, "color": OPTIMUM_COLOUR,
                "line": {"width": 1.5, "color": "white"}}))
    fig.update_xaxes(title_text=esc(xname), range=[x0, x1])
    fig.update_yaxes(title_text=esc(yname), range=[y0, y1])
    _layout(fig, lecture, height=height)
    fig.update_layout(legend={"orientation": "h", "yanchor": "top", "y": -0.14, "x": 0})
    return fig
