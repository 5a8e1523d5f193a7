"""Model builder page: formula box and builder, lmer and lm fits, lme4's output, saved
models with anova, diagnostic plots, the paired t-test link and "reproduce this".

The page's tabs are the table ``SECTIONS``: a tab is one line there and one function that
takes the :class:`Fitted` model; only the open tab's function runs."""

from __future__ import annotations

from typing import Callable, NamedTuple

import pandas as pd
import streamlit as st

import lmmcore
from lmmcore import teaching
from lmmcore.compare import compare_lm, information_criteria
from lmmcore.equation import latex_text, model_equation
from lmmcore.printing import format_anova, format_lm_comparison
from lmmcore.formula_menu import RANDOM_KINDS, RANDOM_LABELS, compose_formula, decompose_formula, random_term
from explorer import charts
from explorer import data as D
from explorer import inference_ui, intervals_ui
from explorer import state as S
from explorer.escape import md
from explorer.tables import table as show_table
from explorer.fitting import fit, guard, summary
from explorer.simulate_ui import copies_section

VARCORR_HEADINGS = {"grp": "Groups", "var1": "Name", "var2": "with", "vcov": "Variance / Cov.",
                    "sdcor": "Std.Dev. / Corr."}
FAMILIES = {"gaussian": "Gaussian (lmer)", "binomial": "binomial (glmer, logit)",
            "poisson": "Poisson (glmer, log)"}


# ------------------------------------------------------------------ formula and builder

def _apply_builder() -> None:
    ss = st.session_state
    try:
        text = compose_formula(
            ss[S.BUILD_RESPONSE], fixed=tuple(ss[S.BUILD_FIXED]), interaction=bool(ss[S.BUILD_INTERACTION]),
            groups=tuple(ss[S.BUILD_GROUPS]), random=ss[S.BUILD_RANDOM], slope=ss.get(S.BUILD_SLOPE) or None,
            grouping=ss[S.BUILD_GROUPING])
    except lmmcore.LmmError as exc:
        ss[S.BUILD_ERROR] = str(exc)
        return
    ss[S.BUILD_ERROR] = None
    ss[S.MODEL_FORMULA] = text


def _builder(data) -> None:
    ss = st.session_state
    # The menus run only while the expander is open: closed (the default), a run skips
    # their seven widgets and the formula's decomposition.
    box = st.expander("Build the formula with menus", key=S.MODEL_BUILDER_OPEN, on_change="rerun")
    if not box.open:
        return
    cols = list(data.df.columns)
    numeric = [c for c in data.numeric]
    categorical = [c for c in data.categorical]
    # None for a formula the menus cannot show (a transform, mixed random parts): empty menus.
    choice = decompose_formula(ss.get(S.MODEL_FORMULA, "")) or {}
    defaults = {
        S.BUILD_RESPONSE: choice.get("response") if choice.get("response") in numeric else (numeric[-1] if numeric else None),
        S.BUILD_FIXED: [c for c in choice.get("fixed", []) if c in cols],
        S.BUILD_INTERACTION: bool(choice.get("interaction", False)),
        S.BUILD_GROUPS: [c for c in choice.get("groups", []) if c in categorical],
        S.BUILD_RANDOM: choice.get("random", "intercept"),
        S.BUILD_SLOPE: choice.get("slope"),
        S.BUILD_GROUPING: choice.get("grouping", "crossed"),
    }
    for k, v in defaults.items():
        if k not in ss:
            ss[k] = v
    with box:
        c1, c2, c3 = st.columns(3)
        with c1:
            st.selectbox("Response", numeric, key=S.BUILD_RESPONSE)
            st.multiselect("Fixed effects", [c for c in cols if c != ss.get(S.BUILD_RESPONSE)], key=S.BUILD_FIXED)
            st.checkbox("With all interactions (a * b)", key=S.BUILD_INTERACTION)
        with c2:
            st.multiselect("Grouping factor(s)", categorical, key=S.BUILD_GROUPS)
            st.radio("Several groups are", ["crossed", "nested"], key=S.BUILD_GROUPING, horizontal=True,
                     help="crossed: (1 | a) + (1 | b); nested: (1 | a/b), b within a (first one outermost)")
        with c3:
            st.radio("Random effects", list(RANDOM_KINDS), key=S.BUILD_RANDOM,
                     format_func=lambda kind: f"{RANDOM_LABELS[kind]} {random_term(kind)}")
            slopes = [c for c in ss.get(S.BUILD_FIXED, []) if c in numeric]
            if ss.get(S.BUILD_SLOPE) not in slopes:
                ss[S.BUILD_SLOPE] = slopes[0] if slopes else None
            st.selectbox("Random slope of", slopes, key=S.BUILD_SLOPE,
                         disabled=ss.get(S.BUILD_RANDOM) == "intercept" or not slopes)
        st.button("Write this formula", key=S.BUILD_APPLY, on_click=_apply_builder, type="primary")
        if ss.get(S.BUILD_ERROR):
            st.error(md(ss[S.BUILD_ERROR]))


def _formula_error(text: str, exc: lmmcore.FormulaError) -> None:
    st.error(md(str(exc)), icon=":material/warning:")
    pos = getattr(exc, "position", None)
    if pos is not None and 0 <= pos <= len(text) and len(text) <= 400:
        st.code(text + "\n" + " " * pos + "^ here", language=None)


# ------------------------------------------------------------------ results

class Fitted(NamedTuple):
    """What every tab reads: the table, the formula as parsed, and the two fits."""
    data: object            # explorer.data.ActiveData
    parsed: object          # lmmcore's parsed formula
    reml: bool
    mixed: object           # the lmer fit, None without random terms (or when it failed)
    linear: object          # the lm with the same fixed effects, None when it failed
    lecture: bool

    @property
    def formula(self) -> str:
        return str(self.parsed)

    @property
    def fit_key(self) -> tuple:
        """(table digest, formula, method): names the fits, so figures are cached on it."""
        return (self.data.digest, self.formula, self.reml)


def _messages(fitted, kind: str) -> None:
    for msg in getattr(fitted, "messages", ()) or ():
        st.warning(f"**{kind}:** " + md(msg), icon=":material/warning:")
    for advice in teaching.what_to_do(fitted):
        st.caption("**What to do:** " + advice)


def _summary(f: Fitted) -> None:
    data, formula, fixed, mixed, linear, reml = f.data, f.formula, f.parsed.fixed_text, f.mixed, f.linear, f.reml
    lm_text = summary("lm", fixed, data, True, linear) if linear is not None else ""
    if mixed is not None:
        ddf = inference_ui.ddf_choice()
        st.markdown(f"**lmer** ({'REML' if reml else 'ML'})")
        if ddf == "lme4":
            st.code(summary("lmer", formula, data, reml, mixed), language=None)
        else:
            with guard("p-values"):
                inference_ui.summary_block(data, formula, reml, mixed, ddf)
        with st.expander("lm with the same fixed effects (ignores the grouping)"):
            st.code(lm_text, language=None)
    else:
        st.markdown("**lm** (no random terms in the formula)")
        st.code(lm_text, language=None)


ML_REFIT_SENTENCE = (
    "**Why the lmer is refitted with ML here.** REML estimates the variances from what is left "
    "after the fixed effects, so its criterion changes with the fixed effects themselves: two REML "
    "fits with different fixed effects, or a REML fit and an lm, are not on the same scale. "
    "`anova()` therefore refits every REML model by maximum likelihood (ML), where each model's "
    "ln L̂ is the likelihood of the same data, and compares those.")


def _equation(f: Fitted) -> None:
    ss = st.session_state
    fits = {k: m for k, m in (("lmer", f.mixed), ("lm", f.linear)) if m is not None}
    if len(fits) > 1:
        if ss.get(S.MODEL_EQUATION_OF) not in fits:
            ss[S.MODEL_EQUATION_OF] = "lmer"
        which = st.radio("Equation of the", list(fits), key=S.MODEL_EQUATION_OF, horizontal=True,
                         format_func=lambda k: "lmer fit" if k == "lmer" else "lm with the same fixed effects")
    else:
        which = next(iter(fits))
    eq = model_equation(fits[which])
    for line in eq.lines:
        st.latex(line)
    st.markdown("Indices: " + "; ".join(f"${letter}$ counts {md(meaning)}" for letter, meaning in eq.indices) + ".")
    c = eq.counts
    st.markdown(f"**Parameters: {c['fixed']} fixed effect{'s' if c['fixed'] != 1 else ''} + "
                f"{c['variance-covariance']} variance-covariance + {c['residual']} residual = {c['total']}** "
                "(the `npar` that `anova()` prints for this model).")
    rows = ["| symbol | kind | estimate | what it is |", "|---|---|---:|---|"]
    for r in eq.symbols.itertuples(index=False):
        rows.append(f"| ${r.symbol}$ | {r.kind} | {r.estimate:.4g} | {md(r.meaning)} |")
    st.markdown("\n".join(rows))
    st.caption("Standard deviations and correlations as `summary()` prints them; the equation writes "
               "each distribution with its variance, the SD squared.")


def _variance_shares(f: Fitted) -> None:
    """ICC and Nakagawa's R² of the lmer fit (on the Tables and the Model checks tabs)."""
    icc = teaching.icc(f.mixed)
    if icc is not None:
        st.markdown("**Intraclass correlation (ICC)**: the share of the variance that lies between groups")
        cols = st.columns(min(4, len(icc)))
        for i, (g, v) in enumerate(icc.items()):
            cols[i % len(cols)].metric(f"ICC {g}", f"{v:.3f}")
    with guard("R²"):
        inference_ui.r2_block(f.data, f.formula, f.reml, f.mixed)


def _checks(f: Fitted) -> None:
    # On a projector the residual plot comes straight after the tabs; the ICC and R² follow.
    if not f.lecture:
        _variance_shares(f)
    intervals_ui.checks_section(f.mixed, f.parsed, f.fit_key, f.lecture)
    if f.lecture:
        _variance_shares(f)


def _side_by_side(lecture: bool):
    # In lecture mode the tables are large HTML tables: two abreast would be cut off.
    return (st.container(), st.container()) if lecture else st.columns(2)


def _tables(f: Fitted) -> None:
    mixed, linear, lecture = f.mixed, f.linear, f.lecture
    left, right = _side_by_side(lecture)
    with left:
        st.markdown("**Fixed effects** (lmer)" if mixed is not None else "**Coefficients** (lm)")
        if mixed is not None:
            fe = pd.DataFrame({"Estimate": mixed.fixef, "Std. Error": mixed.se, "t value": mixed.tvalue})
        else:
            fe = pd.DataFrame({"Estimate": linear.fixef, "Std. Error": linear.se, "t value": linear.tvalue,
                               "Pr(>|t|)": linear.pvalue})
        show_table(fe, page_key=S.MODEL_FIXEF_PAGE)
        if mixed is not None and linear is not None:
            st.markdown("**The same fixed effects in lm** (ignores the grouping)")
            show_table(pd.DataFrame({"Estimate": linear.fixef, "Std. Error": linear.se,
                                     "t value": linear.tvalue, "Pr(>|t|)": linear.pvalue}),
                       page_key=S.MODEL_LM_FIXEF_PAGE)
    if mixed is None:
        return
    with right:
        st.markdown("**Variance components** (VarCorr)")
        # lme4's own headings, and blanks where lme4 prints nothing (not "None").
        vc = mixed.varcorr.rename(columns=VARCORR_HEADINGS)
        vc[["Groups", "Name", "with"]] = vc[["Groups", "Name", "with"]].fillna("")
        show_table(vc, hide_index=True, drop_empty=False)
        st.caption("A row with a second name is the covariance (and correlation) of the two.")
        _variance_shares(f)
    groups = list(mixed.ranef)
    if st.session_state.get(S.MODEL_RANEF_GROUP) not in groups:  # kept from another model
        st.session_state[S.MODEL_RANEF_GROUP] = groups[0]
    g = st.selectbox("Random effects of", groups, key=S.MODEL_RANEF_GROUP) if len(groups) > 1 else groups[0]
    c1, c2 = _side_by_side(lecture)
    for col, what, table, key, page_key in (
            (c1, "coef()", mixed.coef[g], S.MODEL_DOWNLOAD_COEF, S.MODEL_COEF_PAGE),
            (c2, "ranef()", mixed.ranef[g], S.MODEL_DOWNLOAD_RANEF, S.MODEL_RANEF_PAGE)):
        with col:
            st.markdown(f"**{what}**: " + ("fixed + random effect per level" if what == "coef()"
                                           else "each level's deviation from the fixed effects"))
            show_table(table, height=300, page_key=page_key)
            st.download_button(f"Download {what} as CSV", table.to_csv().encode("utf-8"),
                               file_name=f"{what.strip('()')}_{''.join(ch for ch in g if ch.isalnum())}.csv",
                               mime="text/csv", key=key)


def _plots(f: Fitted) -> None:
    mixed, linear, response, lecture = f.mixed, f.linear, f.parsed.response.label, f.lecture
    panels = {}
    if linear is not None:
        panels["lm (complete pooling)"] = (linear.fitted, linear.fitted + linear.residuals, linear.residuals)
    if mixed is not None:
        panels["lmer (partial pooling)"] = (mixed.fitted, mixed.fitted + mixed.residuals, mixed.residuals)
    drawn = f.fit_key + (tuple(panels), response, lecture)
    charts.explained("**Observed vs fitted**: points on the dashed line are explained by the model.", lecture,
                     lambda: charts.show_cached(("fitted_pairs", "observed") + drawn,
                                                lambda: charts.fitted_pairs(panels, "observed", response, lecture),
                                                S.MODEL_CHART_OBSERVED, "observed_vs_fitted"))
    charts.explained("**Residuals vs fitted**: what is left over.", lecture,
                     lambda: charts.show_cached(("fitted_pairs", "residuals") + drawn,
                                                lambda: charts.fitted_pairs(panels, "residuals", response, lecture),
                                                S.MODEL_CHART_RESIDUALS, "residuals_vs_fitted"))
    main = mixed if mixed is not None else linear
    c1, c2 = st.columns(2)
    with c1:
        charts.explained("**Normal Q-Q plot of the residuals**" + (" (lmer)" if mixed is not None else " (lm)"), lecture,
                         lambda: charts.show_cached(("qq",) + drawn,
                                                    lambda: charts.qq_plot(teaching.qq_points(main.residuals), lecture),
                                                    S.MODEL_CHART_QQ, "qq_plot"))
    if mixed is not None:
        with c2:
            groups = list(mixed.ranef)
            if st.session_state.get(S.MODEL_CAT_GROUP) not in groups:  # kept from another model
                st.session_state[S.MODEL_CAT_GROUP] = groups[0]
            g = st.selectbox("Caterpillar plot of", groups, key=S.MODEL_CAT_GROUP) if len(groups) > 1 else groups[0]
            charts.explained("**Random effects with 95% conditional intervals**", lecture,
                             lambda: charts.show_cached(("caterpillar", g) + drawn,
                                                        lambda: charts.caterpillar_plot(teaching.caterpillar(mixed, g),
                                                                                        g, lecture),
                                                        S.MODEL_CHART_CATERPILLAR, "caterpillar"))
        copies_section(mixed, response, lecture, drawn, "model")


def _saved_models(f: Fitted) -> None:
    data, current, reml, has_random = f.data, f.formula, f.reml, f.parsed.has_random
    ss = st.session_state
    if f.mixed is not None:
        with guard("type III anova"):
            inference_ui.anova_block(data, current, reml, f.mixed, ss.get(S.MODEL_DDF, "lme4"))
        st.divider()
    saved = ss[S.MODEL_SAVED]
    mine = {n: m for n, m in saved.items() if m["dataset"] == data.key}
    st.markdown("Save fits under a name, then compare two or more with a likelihood-ratio test "
                "(lme4's `anova()`: REML fits are refitted with ML first).")
    c1, c2, c3 = st.columns([2, 2, 1])
    if not ss.get(S.MODEL_SAVE_NAME):
        ss[S.MODEL_SAVE_NAME] = f"fm{len(mine) + 1}"
    c1.text_input("Name", key=S.MODEL_SAVE_NAME, max_chars=40)
    kinds = ["lmer", "lm"] if has_random else ["lm"]
    if ss.get(S.MODEL_SAVE_KIND) not in kinds:
        ss[S.MODEL_SAVE_KIND] = kinds[0]
    c2.radio("Save the", kinds, key=S.MODEL_SAVE_KIND, horizontal=True,
             format_func=lambda k: "lmer fit" if k == "lmer" else "lm with the same fixed effects")

    def save() -> None:
        name = (ss.get(S.MODEL_SAVE_NAME) or "").strip() or f"fm{len(saved) + 1}"
        kind = ss.get(S.MODEL_SAVE_KIND, "lmer")
        formula = current if kind == "lmer" else lmmcore.parse_formula(current).fixed_text
        ss[S.MODEL_SAVED] = {**ss[S.MODEL_SAVED], name: {"formula": formula, "reml": reml, "kind": kind,
                                                         "dataset": data.key}}
        ss[S.MODEL_SAVE_NAME] = ""
        chosen = [n for n in ss.get(S.MODEL_COMPARE, []) if n in ss[S.MODEL_SAVED]]
        ss[S.MODEL_COMPARE] = chosen + [name] if name not in chosen else chosen

    c3.button("Save", key=S.MODEL_SAVE, on_click=save)
    if not mine:
        st.caption("No saved models for this dataset yet.")
        return
    show_table(pd.DataFrame([{"name": n, "model": m["kind"], "formula": m["formula"],
                                "method": "REML" if m["reml"] and m["kind"] == "lmer" else "ML/OLS"}
                               for n, m in mine.items()]), hide_index=True)
    ss[S.MODEL_COMPARE] = [n for n in ss.get(S.MODEL_COMPARE, []) if n in mine]
    names = st.multiselect("Compare", list(mine), key=S.MODEL_COMPARE)
    if len(names) < 2:
        st.caption("Pick two or more saved models to compare.")
        return
    with guard("anova"):
        fits = [fit(mine[n]["kind"], mine[n]["formula"], data, mine[n]["reml"]) for n in names]
        table = lmmcore.anova(*fits, names=names)
        st.code(format_anova(table), language=None)
        for note in table.attrs.get("notes", []) or []:
            st.caption(md(note))
        with st.expander("All digits"):
            show_table(table)
        kinds = {mine[n]["kind"] for n in names}
        if "lmer" in kinds and ("lm" in kinds or table.attrs.get("notes")):
            st.markdown(ML_REFIT_SENTENCE)
        _worked_comparison(table, dict(zip(names, fits)), mine)


def _worked_comparison(table, fits: dict, mine: dict) -> None:
    """The lecture's recap with the numbers filled in: AIC and BIC from k, n and ln L-hat;
    for two lm fits, PRE and the F test."""
    st.markdown("**Where the numbers come from**")
    worked = information_criteria(table, table.attrs["nobs"])
    for name, row in worked.iterrows():
        label = latex_text(name)
        st.latex(rf"{label}:\ k = {row['k']},\ n = {row['n']},\ \ln\hat L = {row['logLik']:.2f}")
        st.latex(rf"\text{{AIC}} = 2k - 2\ln\hat L = {row['AIC_worked']} \qquad "
                 rf"\text{{BIC}} = \ln(n)\,k - 2\ln\hat L = {row['BIC_worked']}")
    lms = [n for n in table.index if mine[n]["kind"] == "lm"]
    if len(lms) == 2 and len(table.index) == 2:
        compact, augmented = lms  # the anova table is ordered by npar: compact first
        if len(fits[compact].fixef) == len(fits[augmented].fixef):
            st.caption("The two lm fits have as many coefficients each: neither is the compact model "
                       "of the other, so there is no PRE or F test between them.")
            return
        lm_table = compare_lm(fits[compact], fits[augmented])
        a = lm_table.attrs
        sse_c, sse_a = lm_table["RSS"].iloc[0], lm_table["RSS"].iloc[1]
        st.markdown(f"**Two lm fits: proportional reduction in error** (compact {md(compact)}, "
                    f"augmented {md(augmented)})")
        st.latex(rf"\text{{PRE}} = 1 - \frac{{SSE_A}}{{SSE_C}} = 1 - \frac{{{sse_a:.5g}}}{{{sse_c:.5g}}} "
                 rf"= {a['PRE']:.4f}")
        st.latex(rf"F = \frac{{\text{{PRE}}/(PA - PC)}}{{(1 - \text{{PRE}})/(n - PA)}} = "
                 rf"\frac{{{a['PRE']:.4f}/({a['PA']} - {a['PC']})}}{{(1 - {a['PRE']:.4f})/({a['n']} - {a['PA']})}}"
                 rf" = {lm_table['F'].iloc[1]:.4f}")
        st.code(format_lm_comparison(lm_table), language=None)


def _paired(f: Fitted) -> None:
    data, mixed, linear = f.data, f.mixed, f.linear
    res = teaching.paired_comparison(mixed, data.df) if mixed is not None else None
    if res is None:
        st.caption("This tab is for a model like `value ~ condition + (1 | participant)` where every "
                   "participant is measured once in each of two conditions (try the df_original dataset).")
        return
    # On a projector the pictures come straight after the tabs; the t values follow them.
    pictures = st.container() if f.lecture else None
    st.markdown(f"Every level of **{md(res['group'])}** is measured once in each of two conditions of "
                f"**{md(res['condition'])}**: the random-intercept model is the paired t-test.")
    c1, c2, c3, c4 = st.columns(4)
    c1.metric(f"lmer t for {res['coefficient']}", f"{res['lmer_t']:.4f}")
    c2.metric("paired t-test t", f"{res['paired_t']:.4f}")
    c3.metric("df, p (paired t)", f"{res['df']}, {res['p_value']:.3g}")
    if linear is not None and res["coefficient"] in linear.tvalue.index:
        c4.metric("lm t (ignores the pairing)", f"{float(linear.tvalue[res['coefficient']]):.4f}")
    st.caption(f"Mean difference {res['mean_difference']:.4g} = the lmer estimate {res['lmer_estimate']:.4g}. "
               "An lm that ignores the pairing treats the observations as independent and gets a much "
               "smaller t (see the lm table).")
    if linear is not None:
        with pictures or st.container():
            _condition_pictures(f, res)


def _condition_pictures(f: Fitted, res: dict) -> None:
    """The lecture's df.original pictures: what each model predicts, and what it leaves over."""
    mixed, linear, lecture = f.mixed, f.linear, f.lecture
    condition, group, response = res["condition"], res["group"], res["response"]
    rows = f.data.df.loc[mixed.fitted.index]
    table = pd.DataFrame({condition: rows[condition].astype(str), group: rows[group].astype(str),
                          "observed": mixed.fitted + mixed.residuals,
                          "fitted_lm": linear.fitted.reindex(mixed.fitted.index),
                          "residual_lm": linear.residuals.reindex(mixed.fitted.index),
                          "fitted_lmer": mixed.fitted, "residual_lmer": mixed.residuals})
    table = table.sort_values(condition, key=lambda c: c.map({v: i for i, v in enumerate(
        teaching.level_order(rows[condition]))}), kind="stable")
    drawn = f.fit_key + (condition, group, lecture)
    charts.explained("**What each model predicts.** The lm has one prediction per condition for everyone; the "
                     f"lmer gives every {md(group)} a line of their own across the two conditions.", lecture,
                     lambda: charts.show_cached(("condition_panels", "predictions") + drawn,
                                                lambda: charts.condition_panels(table, condition, group, response,
                                                                                "predictions", lecture),
                                                S.MODEL_CHART_CONDITION_FIT, "condition_predictions"))
    charts.explained(f"**What is left over.** The lm leaves much of the variance (residual SD σ = {linear.sigma:.3g}); "
                     f"the lmer's lines explain almost all of it (σ = {mixed.sigma:.3g}): the differences "
                     f"between {md(group)}s were the variance.", lecture,
                     lambda: charts.show_cached(("condition_panels", "residuals") + drawn,
                                                lambda: charts.condition_panels(table, condition, group, response,
                                                                                "residuals", lecture),
                                                S.MODEL_CHART_CONDITION_RESID, "condition_residuals"))


def _reproduce(f: Fitted) -> None:
    data, formula, reml, has_random, parsed = f.data, f.formula, f.reml, f.parsed.has_random, f.parsed
    raw = data.raw
    used = [c for c in parsed.columns if c in data.types]
    categorical = [c for c in used if data.types[c] == "categorical"]
    numeric = [c for c in used if data.types[c] == "numeric" and not pd.api.types.is_numeric_dtype(raw[c])]
    refs = {c: v for c, v in data.reference.items() if c in categorical}
    kind = "lmer" if has_random else "lm"
    ddf = st.session_state.get(S.MODEL_DDF, "lme4")
    r_code, py_code = teaching.reproduce_code(formula, data.file, reml, kind=kind, categorical=categorical,
                                              numeric=numeric, reference_levels=refs,
                                              ddf=ddf if has_random else None, r2=has_random)
    st.markdown(("**R (lme4, lmerTest, performance)**" if has_random else "**R**")
                + ": the copy icon at the top right of each box copies the code")
    st.code(r_code, language="r", wrap_lines=True)
    st.markdown("**Python (lmmcore)**")
    st.code(py_code, language="python", wrap_lines=True)
    if data.is_own:
        st.download_button("Download the data as CSV", data.df.to_csv(index=False).encode("utf-8"),
                           file_name=data.file if data.file.endswith(".csv") else "data.csv",
                           mime="text/csv", key=S.MODEL_DOWNLOAD_DATA)


class Section(NamedTuple):
    """One tab of the page: its label, what a failure in it is called, and what draws it."""
    label: str
    what: str
    draw: Callable[[Fitted], None]


def _mixed_only(draw: Callable[[Fitted], None]) -> Callable[[Fitted], None]:
    """A tab about the lmer fit (explorer.intervals_ui): a note instead without one."""
    def section(f: Fitted) -> None:
        if f.mixed is None:
            st.caption("This section needs a mixed model: add a random term such as "
                       "`(1 | group)` to the formula.")
            return
        draw(f)
    return section


SECTIONS = (
    Section("lme4 summary", "summary", _summary),
    Section("Equation", "equation", _equation),
    Section("Tables", "tables", _tables),
    Section("Plots", "plots", _plots),
    Section("Intervals", "intervals", _mixed_only(
        lambda f: intervals_ui.intervals_section(f.mixed, f.fit_key, f.lecture))),
    Section("Predictions", "predictions", _mixed_only(
        lambda f: intervals_ui.predictions_section(f.mixed, f.data, f.parsed, f.fit_key,
                                                   f.lecture))),
    Section("Model checks", "model checks", _mixed_only(_checks)),
    Section("Saved models & anova", "saved models", _saved_models),
    Section(S.PAIRED_TAB, "paired t", _paired),
    Section("Reproduce this", "reproduce", _reproduce),
)


def _about_data(data) -> None:
    """The dataset line and the formula builder's menus."""
    st.caption(f"Dataset: {md(data.label)} · {len(data.df):,} rows · columns: "
               + ", ".join(md(c) for c in data.df.columns[:30]))
    _builder(data)


def _formula_and_fits(data, lecture: bool) -> None:
    """The formula box, the two fits, lme4's messages and the open tab."""
    ss = st.session_state
    c1, c2, c3 = st.columns([3, 1, 2])
    c1.text_input("Formula (lme4 syntax)", key=S.MODEL_FORMULA, on_change=S.clear_builder,
                  max_chars=5000, placeholder="Reaction ~ Days + (Days | Subject)")
    if ss.get(S.MODEL_FAMILY) not in FAMILIES:
        ss[S.MODEL_FAMILY] = "gaussian"
    # a menu, not radio buttons: one line high, so lecture mode's chart keeps its space
    c3.selectbox("Family", list(FAMILIES), key=S.MODEL_FAMILY, format_func=FAMILIES.get)
    family = ss[S.MODEL_FAMILY]
    c2.radio("Estimation", ["REML", "ML"], key=S.MODEL_METHOD, horizontal=True,
             disabled=family != "gaussian",
             help="glmer fits by maximum likelihood only" if family != "gaussian" else None)
    text = (ss.get(S.MODEL_FORMULA) or "").strip()
    if not text:
        st.info("Write a formula, e.g. `response ~ predictor + (1 | group)`, or use the menus "
                + ("below." if lecture else "above."))
        return
    try:
        parsed = lmmcore.parse_formula(text)
    except lmmcore.FormulaError as exc:
        _formula_error(text, exc)
        return
    formula = str(parsed)
    if parsed.response.kind == "column":
        suggested, why = lmmcore.suggest_family(data.df, parsed.response.column)
        if suggested != family and why:
            st.info(md(why) + f" Choose **{FAMILIES[suggested]}** as the family.",
                    icon=":material/lightbulb:")
    if family != "gaussian":
        _glmer_results(data, formula, parsed, family, lecture)
        return
    reml = ss.get(S.MODEL_METHOD, "REML") == "REML"
    mixed = linear = None
    shown: set = set()
    if parsed.has_random:
        with guard("lmer fit", shown), st.spinner("Fitting the mixed model..."):
            mixed = fit("lmer", formula, data, reml)
    with guard("lm fit", shown):
        linear = fit("lm", parsed.fixed_text, data)
    if mixed is None and linear is None:
        return
    if mixed is not None:
        _messages(mixed, "lmer")
    # Only the open tab runs: each tab's content (charts above all) costs far more than the
    # fit, and a student looks at one at a time.  Switching tabs reruns the page.
    labels = [section.label for section in SECTIONS]
    if ss.get(S.MODEL_SECTION) not in labels:
        ss[S.MODEL_SECTION] = labels[0]
    tabs = st.tabs(labels, key=S.MODEL_SECTION, on_change="rerun")
    fitted = Fitted(data, parsed, reml, mixed, linear, lecture)
    for section, tab in zip(SECTIONS, tabs):
        if tab.open:
            with tab, guard(section.what):
                section.draw(fitted)


def _glmer_results(data, formula: str, parsed, family: str, lecture: bool) -> None:
    """A binomial or Poisson mixed model: lme4's glmer summary and tables."""
    if not parsed.has_random:
        st.info("A generalized linear mixed model needs a random term such as (1 | group) in "
                "the formula.")
        return
    with guard("glmer fit"), st.spinner("Fitting the generalized linear mixed model..."):
        fitted = fit(f"glmer:{family}", formula, data)
        _messages(fitted, "glmer")
        st.markdown(f"**glmer** ({FAMILIES[family]}, Laplace approximation)")
        st.code(summary(f"glmer:{family}", formula, data, True, fitted), language=None)
        left, right = _side_by_side(lecture)
        with left:
            scale = "log-odds" if family == "binomial" else "log of the expected count"
            st.markdown(f"**Fixed effects** (on the {scale} scale)")
            show_table(fitted.coef_table(), page_key=S.MODEL_FIXEF_PAGE)
        with right:
            st.markdown("**Random effects (VarCorr)**")
            show_table(fitted.varcorr.rename(columns=VARCORR_HEADINGS), hide_index=True,
                       drop_empty=False)
        st.caption("Plots, saved models with anova, the paired t-test and \"Reproduce this\" "
                   "are for Gaussian models (lmer) so far.")


def render() -> None:
    lecture = bool(st.session_state.get(S.APP_LECTURE))
    st.title("Model builder")
    with guard("model page"):
        data = D.active()
        # On a projector the formula and the tabs come straight after the title, so the
        # open tab's chart starts high on the first screen; the dataset line and the
        # builder's menus follow the tab's content.
        if not lecture:
            _about_data(data)
        _formula_and_fits(data, lecture)
        if lecture:
            _about_data(data)


render()
