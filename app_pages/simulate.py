"""Simulate page: data with the truth known (does partial pooling really win?), the same study
repeated 200 times beside the theory, cross-validation of the three poolings on any dataset,
and power by simulation for subjects x two conditions."""

from __future__ import annotations

import pandas as pd
import streamlit as st

import lmmcore
from lmmcore.crossval import SCHEME_QUESTIONS, SCHEMES
from lmmcore.simulate import PRESETS
from explorer import charts
from explorer import data as D
from explorer import state as S
from explorer.escape import md
from explorer.fitting import guard
from explorer.settings import load_settings
from explorer.simulate_ui import copies_section, run_on_click, study
from explorer.tables import table as show_table

SECTIONS = ["Simulated groups", "Cross-validation", "Power"]
INTRO = ("Does partial pooling really estimate each group better? On real data nobody knows the true "
         "group values; here they are drawn first, so each method's miss can be measured.")
METHOD_NAMES = {"complete": "complete pooling", "no": "no pooling", "partial": "partial pooling"}
RANDOM_LABELS = {"intercept+slope": "intercept and slope vary by group", "intercept": "intercept only"}
# setting -> (label, min, max, step, help); the keys are S.SIM_SETTING_KEYS[setting]
SLIDERS = {
    "n_groups": ("Number of groups", 2, 60, 1, None),
    "n_per_group": ("Observations per group", 1, 30, 1, "x runs 0, 1, 2, ... in every group"),
    "imbalance": ("Imbalance: share of groups with only 1 or 2 observations", 0.0, 1.0, 0.05, None),
    "intercept": ("Fixed intercept", -100.0, 100.0, 1.0, None),
    "slope": ("Fixed slope", -10.0, 10.0, 0.1, None),
    "sd_intercept": ("Random intercept SD (τ₀)", 0.0, 50.0, 0.1, "how much the groups' intercepts vary"),
    "sd_slope": ("Random slope SD (τ₁)", 0.0, 10.0, 0.05, "how much the groups' slopes vary"),
    "corr": ("Correlation of intercept and slope", -0.95, 0.95, 0.05, None),
    "sigma": ("Residual SD (σ)", 0.1, 50.0, 0.1, "the noise around each group's line"),
}
REPEATS = 200
SCHEME_LABELS = {"loo": "leave one out", "kfold": "k-fold", "mc": "repeated random splits",
                 "forecast": "forecast the last x", "group": "leave one group out"}


def _apply_preset() -> None:
    preset = st.session_state.get(S.SIM_PRESET)
    if preset in PRESETS:
        st.session_state.update(S.simulation_defaults(preset))
    # The mixture preset is about what "Simulate from this fit" shows: open it.
    st.session_state[S.SIM_COPIES_OPEN] = preset == "mixture"


def _settings() -> dict:
    ss = st.session_state
    return {name: ss[key] for name, key in S.SIM_SETTING_KEYS.items()}


def _controls(lecture: bool, explain=None) -> tuple:
    """Preset, seed and fitted models across the top; the explanation of the preset under
    them, or in ``explain`` (a container below the chart, on a projector).  In lecture
    mode the fitted models are a menu, one line high like the other two, so the row stays
    compact and the chart starts high on the first screen."""
    ss = st.session_state
    options = ["none"] + list(PRESETS)
    if ss.get(S.SIM_PRESET) not in options:
        ss[S.SIM_PRESET] = "none"
    c1, c2, c3 = st.columns([2, 1, 1.2] if not lecture else [1.6, 0.8, 1.6])
    preset = c1.selectbox("Preset", options, key=S.SIM_PRESET, on_change=_apply_preset,
                          format_func=lambda k: "none: set the sliders yourself" if k == "none" else PRESETS[k].title)
    c2.number_input("Seed", min_value=0, max_value=1_000_000, step=1, key=S.SIM_SEED,
                    help="The same seed gives the same data; change it for a new draw.")
    (c3.selectbox if lecture else c3.radio)("Fitted models", list(RANDOM_LABELS), key=S.SIM_RANDOM,
                                            format_func=RANDOM_LABELS.get)
    if preset in PRESETS:
        (explain or st).info(md(PRESETS[preset].explanation), icon=":material/lightbulb:")
    return (None if preset == "none" else preset), int(ss[S.SIM_SEED]), ss[S.SIM_RANDOM]


def _sliders(ncols: int = 1) -> None:
    """The simulation's settings, one under the other (beside the chart), or in ``ncols``
    columns (under the chart, on a projector)."""
    st.markdown("**The model the data are drawn from**")
    cols = st.columns(ncols) if ncols > 1 else [st.container()]
    for i, (name, (label, lo, hi, step, help_text)) in enumerate(SLIDERS.items()):
        cols[i % ncols].slider(label, lo, hi, step=step, key=S.SIM_SETTING_KEYS[name], help=help_text)
    st.checkbox("Centre x at 0 in every group", key=S.SIM_SETTING_KEYS["centre_x"],
                help="The intercept is then each group's mean level (the theory's reference values assume this).")
    st.caption("y = (intercept + b₀ⱼ) + (slope + b₁ⱼ)·x + e, with (b₀ⱼ, b₁ⱼ) normal with SDs τ₀, τ₁ and "
               "their correlation, and e normal with SD σ. The truth, each group's intercept + b₀ⱼ and "
               "slope + b₁ⱼ, is known here, unlike in real data.")


def _winner_sentence(err: pd.DataFrame) -> str:
    best = err["intercept"].astype(float).idxmin()
    return (f"On this draw **{METHOD_NAMES[best]}** estimates the group intercepts best. One draw is "
            "one draw: repeat the study below to see how often that happens.")


def _error_table(err: pd.DataFrame, slope: bool) -> pd.DataFrame:
    out = err.rename(index=METHOD_NAMES).rename(columns={
        "intercept": "RMSE of intercepts", "slope": "RMSE of slopes", "n_groups": "groups estimated"})
    return out if slope else out.drop(columns=["RMSE of slopes"])


def _reference(settings: dict, preset) -> tuple[dict, list]:
    """The theory's values for the intercepts and the settings that break its assumptions."""
    n, tau, sigma = int(settings["n_per_group"]), float(settings["sd_intercept"]), float(settings["sigma"])
    theory = lmmcore.known_variance_rmse(int(settings["n_groups"]), n, tau, sigma)
    reference = {"no": (float(theory["no"]), f"σ/√n = {theory['no']:.3g}"),
                 "partial": (float(theory["partial"]), f"(1/τ₀² + n/σ²)^-½ = {theory['partial']:.3g}"),
                 "complete": (float(theory["complete"]), f"complete {theory['complete']:.3g}")}
    broken = []
    if not settings["centre_x"]:
        broken.append("x is not centred (the intercept sits at x = 0, the edge of the data, where every "
                      "estimate is less precise)")
    if float(settings["sd_slope"]) > 0:
        broken.append("the slopes vary too")
    if float(settings["imbalance"]) > 0:
        broken.append("groups differ in size")
    if preset is not None:
        broken.append(f"the preset '{PRESETS[preset].title}' changes the model")
    return reference, broken


def _repeat(settings: dict, preset, seed: int, random: str) -> None:
    ss = st.session_state
    signature = (tuple(sorted(settings.items())), preset, seed, random)
    st.subheader(f"Repeat the study {REPEATS} times")
    st.markdown("Same design, new random effects and residuals each time; each method's error against "
                "the truth is recorded. Partial pooling wins **on average**, not every time.")
    runs = run_on_click(f"Repeat {REPEATS} times", S.SIM_REPEAT_RUN, S.SIM_REPEATS, signature, "runs",
                        lambda progress: lmmcore.repeat_pooling_error(REPEATS, preset=preset, random=random,
                                                                      seed=seed, progress=progress, **settings),
                        "Press the button to run it (a few seconds).")
    if runs is None:
        return
    reference, broken = _reference(settings, preset)
    lecture = bool(ss.get(S.APP_LECTURE))
    charts.show_cached(("rmse_distribution", "intercept", lecture) + signature,
                       lambda: charts.rmse_distribution(runs, "intercept", reference, lecture),
                       S.SIM_REPEAT_CHART, "rmse_distribution")
    wide = runs.pivot(index="rep", columns="method", values="intercept")
    wins = float((wide["partial"] < wide["no"]).mean())
    summary = runs.groupby("method")[["intercept", "slope"]].mean().reindex(list(METHOD_NAMES))
    summary.columns = ["mean RMSE of intercepts", "mean RMSE of slopes"]
    if random == "intercept" or float(settings["sd_slope"]) == 0 and random == "intercept":
        summary = summary.drop(columns=["mean RMSE of slopes"])
    summary["theory (intercepts, variances known)"] = [reference[m][0] for m in METHOD_NAMES]
    show_table(summary.rename(index=METHOD_NAMES))
    singular = float(runs.loc[runs["method"] == "partial", "singular"].mean())
    st.markdown(f"Partial pooling beat no pooling on the intercepts in **{wins:.0%}** of the {REPEATS} runs. "
                f"{singular:.0%} of the lmer fits were singular.")
    note = ("Dashed lines: the theory for balanced groups of n with x centred and no random slope, when τ₀ and σ "
            "are known: no pooling σ/√n, partial pooling (1/τ₀² + n/σ²)^-½, complete pooling "
            "√(τ₀²(1 − 1/J) + σ²/(nJ)). lmer estimates τ₀ and σ, which costs a little.")
    if broken:
        note += " Here they are only a rough guide: " + "; ".join(broken) + "."
    st.caption(note)


def _simulated_groups(lecture: bool) -> None:
    if lecture:
        # On a projector the chart comes straight after the compact row of pickers; the
        # sliders, the preset's explanation and the words follow it.
        top, chart, legend, below = st.container(), st.container(), st.container(), st.container()
        with top:
            preset, seed, random = _controls(lecture, below)
        with below:
            _sliders(ncols=3)
        words = st.container()
    else:
        preset, seed, random = _controls(lecture)
        left, words = st.columns([1, 2.4], gap="medium")
        with left:
            _sliders()
        chart = words
    settings = _settings()
    with st.spinner("Simulating and fitting..."):
        result = study(tuple(sorted(settings.items())), preset, seed, random)
    data, truth, est, err = result
    fit = est.fit
    key = (tuple(sorted(settings.items())), preset, seed, random, lecture)
    shrinkage_words = ("**Shrinkage with the truth**: arrows go from no pooling to partial pooling; the stars are "
                       "the true values, each tied to its partial-pooling estimate by a dotted line (the miss).")
    with words:
        for message in fit.messages:
            st.warning(md(message), icon=":material/info:")
        st.markdown("**Each method against the truth** (root mean squared error over the groups)")
        show_table(_error_table(err, True))
        st.markdown(_winner_sentence(err))
        if not lecture:
            st.markdown(shrinkage_words)
    if lecture:
        legend.markdown(shrinkage_words)
    if random == "intercept+slope":
        def build():
            return charts.shrinkage_2d(est, lmmcore.re_contours(fit, "group"), lecture, truth=truth)
    else:
        def build():
            return charts.shrinkage_1d(est, lecture, truth=truth)
    with chart:
        charts.show_cached(("sim_shrinkage", random) + key, build, S.SIM_SHRINKAGE_CHART, "simulated_shrinkage")
    # The panels cost more to draw than everything else on the tab: in an expander (open by
    # default) whose content runs only while it is open.
    st.session_state.setdefault(S.SIM_PANELS_OPEN, True)
    box = st.expander("The groups: data, the three lines and the true line", key=S.SIM_PANELS_OPEN,
                      on_change="rerun")
    if box.open:
        with box:
            groups = list(truth.index)
            view = groups[:6 if lecture else 8]
            few = pd.Series({g: n <= 2 for g, n in data.groupby("group").size().items()})
            charts.show_cached(("sim_panels", tuple(view)) + key,
                               lambda: charts.pooling_panels(data, est, view, few, lecture, ncols=3 if lecture else 4,
                                                             truth=truth),
                               S.SIM_PANELS_CHART, "simulated_pooling")
            if len(groups) > len(view):
                st.caption(f"The first {len(view)} of {len(groups)} groups; the table and the shrinkage plot "
                           "use all.")
    copies_section(fit, "y", lecture, key, "simulate")
    st.download_button("Download the simulated data (CSV)", data.to_csv(index=False).encode("utf-8"),
                       file_name="simulated.csv", mime="text/csv", key=S.SIM_DOWNLOAD)
    _repeat(settings, preset, seed, random)


def _cv_controls(data) -> tuple | None:
    ss = st.session_state
    numeric = list(data.numeric)
    groups = [c for c in data.categorical if 1 < data.df[c].nunique() < len(data.df)]
    if len(numeric) < 2 or not groups:
        st.warning("Cross-validation needs a numeric response, a numeric predictor and a categorical grouping "
                   "column. Switch column types on the Dataset page, or pick another dataset in the sidebar.")
        return None
    defaults = {S.SIM_CV_RESPONSE: (ss.get(S.POOL_RESPONSE), numeric[-1]),
                S.SIM_CV_GROUP: (ss.get(S.POOL_GROUP), groups[0])}
    for key, (wanted, fallback) in defaults.items():
        allowed = numeric if key == S.SIM_CV_RESPONSE else groups
        if ss.get(key) not in allowed:
            ss[key] = wanted if wanted in allowed else fallback
    c1, c2, c3, c4 = st.columns([1, 1, 1, 1.3])
    response = c1.selectbox("Response", numeric, key=S.SIM_CV_RESPONSE)
    predictors = [c for c in numeric if c != response]
    if ss.get(S.SIM_CV_PREDICTOR) not in predictors:
        pool = ss.get(S.POOL_PREDICTOR)
        ss[S.SIM_CV_PREDICTOR] = pool if pool in predictors else predictors[0]
    predictor = c2.selectbox("Numeric predictor", predictors, key=S.SIM_CV_PREDICTOR)
    group = c3.selectbox("Grouping factor", groups, key=S.SIM_CV_GROUP)
    if ss.get(S.SIM_CV_RANDOM) not in RANDOM_LABELS:
        ss[S.SIM_CV_RANDOM] = "intercept+slope"
    random = c4.selectbox("Random part", list(RANDOM_LABELS), key=S.SIM_CV_RANDOM, format_func=RANDOM_LABELS.get)
    c1, c2, c3 = st.columns([2, 1, 1])
    scheme = c1.radio("Scheme", list(SCHEMES), key=S.SIM_CV_SCHEME, format_func=SCHEME_LABELS.get, horizontal=True)
    options = {}
    if scheme == "kfold":
        options["k"] = int(c2.number_input("Folds (k)", 2, 50, step=1, key=S.SIM_CV_K))
    if scheme == "mc":
        options["test_fraction"] = float(c2.slider("Share held out", 0.05, 0.5, step=0.05, key=S.SIM_CV_FRACTION))
        options["repeats"] = int(c3.number_input("Random splits", 1, 500, step=1, key=S.SIM_CV_SPLITS))
    if scheme in ("kfold", "mc"):
        options["seed"] = int(c3.number_input("Seed", 0, 1_000_000, step=1, key=S.SIM_CV_SEED)
                              if scheme == "kfold" else ss.get(S.SIM_CV_SEED, 1))
    return response, predictor, group, random, scheme, options


def _cross_validation(lecture: bool) -> None:
    data = D.active()
    # On a projector the result's chart comes first, the pickers and the words below it.
    chart, body, tail = (st.container(), st.container(), st.container()) if lecture else (st.container(),) * 3
    tail.markdown(f"Dataset: **{md(data.label)}** (pick another in the sidebar). Each split fits complete pooling "
                  "`lm(y ~ x)`, no pooling `lm(y ~ x * g)` and partial pooling `lmer(y ~ x + (x | g))` to the "
                  "training rows and predicts the held-out rows.")
    with body:
        _cv_run(data, lecture, chart)


def _cv_run(data, lecture: bool, chart) -> None:
    """The pickers, the Run button and, once run, the errors (chart in ``chart``) and the table."""
    chosen = _cv_controls(data)
    if chosen is None:
        return
    response, predictor, group, random, scheme, options = chosen
    st.info(md(SCHEME_QUESTIONS[scheme]), icon=":material/help:")
    signature = (data.digest, response, predictor, group, random, scheme, tuple(sorted(options.items())))
    limit = load_settings().worker_min_rows
    if len(data.df) >= limit:
        st.warning(f"Cross-validation refits the mixed model once per split; on this page it runs for tables "
                   f"under {limit:,} rows (this one has {len(data.df):,}).")
        return
    table = run_on_click("Run cross-validation", S.SIM_CV_RUN, S.SIM_CV_RESULT, signature, "splits",
                         lambda progress: lmmcore.cross_validate(data.df, response, predictor, group, random=random,
                                                                 scheme=scheme, progress=progress, **options),
                         "Press the button to run it (leave-one-out fits one lmer per row: a few seconds for "
                         "sleepstudy).")
    if table is None:
        return
    with chart:
        charts.show_cached(("cv_errors", lecture) + signature, lambda: charts.cv_errors(table, lecture),
                           S.SIM_CV_CHART, "cross_validation")
    show_table(table.rename(index=METHOD_NAMES).rename(columns={"rmse": "prediction RMSE",
                                                                 "n": "predictions made"}))
    best = table["rmse"].idxmin()
    st.markdown(f"**{METHOD_NAMES[best]}** predicts best here ({table.attrs['splits']:,} splits).")
    if "no" in table.index and table.loc["no", "n"] < table.loc["complete", "n"]:
        st.caption(f"No pooling made {int(table.loc['no', 'n'])} of {int(table.loc['complete', 'n'])} predictions: "
                   "it has nothing to say about a group absent from the training rows.")


POWER_SLIDERS = {
    "n_subjects": ("Subjects", 2, 100, 1),
    "n_trials": ("Trials per subject and condition", 1, 20, 1),
    "effect": ("True effect (B − A)", 0.0, 5.0, 0.05),
    "sd_subject": ("Subject SD", 0.0, 5.0, 0.05),
    "sigma": ("Residual SD", 0.1, 5.0, 0.05),
    "n_sims": ("Simulated studies", 50, 1000, 50),
}


def _power(lecture: bool) -> None:
    ss = st.session_state
    st.markdown("Every subject is measured in conditions A and B. For a true effect, a subject SD and a residual "
                "SD, many studies are simulated; each is tested with the mixed model `y ~ condition + (1 | subject)` "
                "(lmerTest's Satterthwaite t-test) and with the paired t-test on the subjects' means. **Power** is "
                "the share of studies in which a test finds p < .05.")
    cols = st.columns(3)
    for i, (name, (label, lo, hi, step)) in enumerate(POWER_SLIDERS.items()):
        cols[i % 3].slider(label, lo, hi, step=step, key=S.SIM_POWER_KEYS[name])
    settings = {name: ss[key] for name, key in S.SIM_POWER_KEYS.items()}
    signature = tuple(sorted(settings.items())) + (int(ss[S.SIM_SEED]),)
    out = run_on_click("Simulate the studies", S.SIM_POWER_RUN, S.SIM_POWER_RESULT, signature, "studies",
                       lambda progress: lmmcore.simulate_power(
                           settings["n_subjects"], settings["effect"], settings["sd_subject"], settings["sigma"],
                           n_trials=settings["n_trials"], n_sims=settings["n_sims"], seed=int(ss[S.SIM_SEED]),
                           progress=progress),
                       "Press the button to run it (the seed is the one on the first tab).")
    if out is None:
        return
    c1, c2, c3 = st.columns(3)
    for col, (row, label) in zip((c1, c2, c3), (("lmer", "lmer (Satterthwaite) detects"),
                                                ("paired t", "paired t-test detects"),
                                                ("singular", "singular lmer fits"))):
        col.metric(label, f"{out.loc[row, 'share']:.1%}", help=f"± {1.96 * out.loc[row, 'mc_se']:.1%} (95% Monte Carlo)")
    n = int(settings["n_sims"])
    st.markdown(f"**Monte Carlo error**: with {n} simulated studies each share is uncertain by about "
                f"±{1.96 * out.loc['lmer', 'mc_se']:.1%} (1.96 × √(p(1 − p)/{n})); more studies narrow it.")
    if settings["n_trials"] == 1:
        st.caption("With one trial per condition the lmer test is the paired t-test: they differ only where the fit "
                   "is singular (the subject SD estimated as 0), where lmer tests as if the subjects did not differ.")
    st.warning("Power belongs to a design and an assumed true effect, before the data exist. Do not compute "
               "\"observed power\" from a study's own estimate: it is a function of the p-value and says nothing "
               "new about it.", icon=":material/report:")


def render() -> None:
    ss = st.session_state
    lecture = bool(ss.get(S.APP_LECTURE))
    st.title("Simulate")
    if not lecture:
        st.markdown(INTRO)
    if ss.get(S.SIM_SECTION) not in SECTIONS:
        ss[S.SIM_SECTION] = SECTIONS[0]
    # Only the open tab runs (as on the model page): a student looks at one at a time.
    tabs = st.tabs(SECTIONS, key=S.SIM_SECTION, on_change="rerun")
    if tabs[0].open:
        with tabs[0], guard("simulation"):
            _simulated_groups(lecture)
            if lecture:  # on a projector the chart comes first, the page's question after it
                st.markdown(INTRO)
    if tabs[1].open:
        with tabs[1], guard("cross-validation"):
            _cross_validation(lecture)
    if tabs[2].open:
        with tabs[2], guard("power"):
            _power(lecture)


render()
