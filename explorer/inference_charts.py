"""Charts for the Model page's intervals, predictions and model checks (look from ``charts``).

Drawn from lmmcore's outputs (bootstrap replicates, predictions with intervals, influence
tables); nothing here computes a statistic except the kernel density that draws the
bootstrap replicates as a curve.  User text goes through ``plotly_text``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from scipy.stats import gaussian_kde

from explorer.charts import OKABE_ITO, DATA_COLOUR, _layout, sizes
from explorer.escape import plotly_text as esc

POPULATION = OKABE_ITO["black"]
RIBBON = "rgba(0, 114, 178, 0.30)"         # Okabe-Ito blue: the confidence ribbon
BAND = "rgba(86, 180, 233, 0.15)"          # sky: where a new group's data would fall
GROUP_LINE = "rgba(213, 94, 0, 0.35)"      # vermillion, faint: each group's own line
HIGHLIGHT = OKABE_ITO["vermillion"]


def bootstrap_densities(replicates: pd.DataFrame, estimate: pd.Series, limits: pd.DataFrame,
                        lecture: bool) -> go.Figure:
    """One panel per parameter: the density of its bootstrap estimates, the fit's value
    (solid) and the percentile limits (dashed)."""
    s = sizes(lecture)
    names = list(replicates.columns)
    ncol = 2 if lecture else 3
    nrow = -(-len(names) // ncol)
    fig = make_subplots(rows=nrow, cols=ncol, subplot_titles=[esc(n) for n in names],
                        horizontal_spacing=0.08, vertical_spacing=0.5 / max(nrow, 1))
    for i, name in enumerate(names):
        r, c = i // ncol + 1, i % ncol + 1
        t = replicates[name].to_numpy(float)
        t = t[np.isfinite(t)]
        if len(t) >= 2 and np.ptp(t) > 0:
            grid = np.linspace(t.min(), t.max(), 200)
            dens = gaussian_kde(t)(grid)
            fig.add_trace(go.Scatter(x=grid, y=dens, mode="lines", showlegend=False, fill="tozeroy",
                                     line={"color": OKABE_ITO["blue"], "width": s["line"]},
                                     name=esc(name)), row=r, col=c)
        fig.add_vline(x=float(estimate[name]), line={"color": "black", "width": s["line"] / 1.5},
                      row=r, col=c)
        for v in limits.loc[name].to_numpy(float):
            if np.isfinite(v):
                fig.add_vline(x=float(v), line={"color": OKABE_ITO["vermillion"], "dash": "dash",
                                                "width": s["line"] / 1.5}, row=r, col=c)
        fig.update_yaxes(showticklabels=False, row=r, col=c)
    return _layout(fig, lecture, height=230 * nrow + 40)


def predictions(data: pd.DataFrame, x: str, response: str, population: pd.DataFrame,
                band: pd.DataFrame, groups: dict, highlight: dict, lecture: bool) -> go.Figure:
    """The data, each group's own line, the population line with its confidence ribbon
    and the band where a new group's data would fall.

    ``population`` and ``band``: frames with ``x``, ``fit``, ``lwr``, ``upr``;
    ``groups``: level -> (x values, predictions); ``highlight``: level -> (x values,
    predictions, observed x, observed y) for groups drawn in full colour.
    """
    s = sizes(lecture)
    fig = go.Figure()
    xs = band[x].to_numpy(float)
    fig.add_trace(go.Scatter(x=np.r_[xs, xs[::-1]], y=np.r_[band["upr"], band["lwr"][::-1]],
                             fill="toself", fillcolor=BAND, line={"width": 0}, hoverinfo="skip",
                             name="95% of a new group's data"))
    fig.add_trace(go.Scatter(x=data[x], y=data[response], mode="markers", name="data",
                             marker={"color": DATA_COLOUR, "size": s["data_marker"], "opacity": 0.5}))
    first = True
    for level, (gx, gy) in groups.items():
        fig.add_trace(go.Scatter(x=gx, y=gy, mode="lines", name="each group's own line",
                                 legendgroup="groups", showlegend=first,
                                 line={"color": GROUP_LINE, "width": s["line"] / 2},
                                 hovertext=esc(str(level)), hoverinfo="text"))
        first = False
    xs = population[x].to_numpy(float)
    fig.add_trace(go.Scatter(x=np.r_[xs, xs[::-1]],
                             y=np.r_[population["upr"], population["lwr"][::-1]],
                             fill="toself", fillcolor=RIBBON, line={"width": 0}, hoverinfo="skip",
                             name="95% confidence ribbon"))
    fig.add_trace(go.Scatter(x=xs, y=population["fit"], mode="lines", name="population line",
                             line={"color": POPULATION, "width": s["line"] * 1.3}))
    dashes = ["dash", "dot", "dashdot", "longdash"]
    for i, (level, (gx, gy, ox, oy)) in enumerate(highlight.items()):
        label = esc(str(level))
        fig.add_trace(go.Scatter(x=gx, y=gy, mode="lines", name=f"{label} (own line)",
                                 line={"color": HIGHLIGHT, "width": s["line"],
                                       "dash": dashes[i % len(dashes)]}))
        fig.add_trace(go.Scatter(x=ox, y=oy, mode="markers", name=f"{label} (measured)",
                                 marker={"color": HIGHLIGHT, "size": s["marker"] * 1.4,
                                         "symbol": "diamond", "line": {"color": "black", "width": 1}}))
    fig.update_xaxes(title_text=esc(x), showgrid=True)
    fig.update_yaxes(title_text=esc(response), showgrid=True)
    return _layout(fig, lecture, height=560)


def cooks_distance(table: pd.DataFrame, group: str, lecture: bool) -> go.Figure:
    """Cook's distance of each left-out level, as bars."""
    s = sizes(lecture)
    labels = [esc(str(v)) for v in table.index]
    fig = go.Figure(go.Bar(x=labels, y=table["cooks_distance"], marker_color=OKABE_ITO["blue"],
                           name="Cook's distance"))
    fig.update_xaxes(title_text=esc(group) + " left out", type="category",
                     tickfont={"size": s["font"] - (2 if len(labels) > 20 else 0)})
    fig.update_yaxes(title_text="Cook's distance", showgrid=True)
    return _layout(fig, lecture, height=380)


def fixef_shifts(shifts: pd.DataFrame, se: pd.Series, group: str, lecture: bool) -> go.Figure:
    """How far each fixed effect moves when each level is left out, in standard errors."""
    s = sizes(lecture)
    terms = list(shifts.columns)
    fig = make_subplots(rows=1, cols=len(terms), subplot_titles=[esc(t) for t in terms],
                        shared_yaxes=True, horizontal_spacing=0.05)
    labels = [esc(str(v)) for v in shifts.index]
    for i, t in enumerate(terms, start=1):
        z = shifts[t].to_numpy(float) / float(se[t])
        fig.add_trace(go.Scatter(x=z, y=labels, mode="markers", showlegend=False,
                                 marker={"color": OKABE_ITO["vermillion"], "size": s["marker"]},
                                 hovertext=[f"{lab}: {v:+.3g} SE" for lab, v in zip(labels, z)],
                                 hoverinfo="text"), row=1, col=i)
        fig.add_vline(x=0, line={"color": "black", "dash": "dash", "width": s["line"] / 1.5},
                      row=1, col=i)
        fig.update_xaxes(title_text="change (standard errors)", row=1, col=i, showgrid=True)
    fig.update_yaxes(type="category", title_text=esc(group) + " left out", row=1, col=1)
    return _layout(fig, lecture, height=max(320, 18 * len(labels) + 120))
