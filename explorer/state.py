"""Session state of one student: every key, its default, and the shareable URL query.

Every session-state and widget key of the app is a constant here, and nowhere else: pages
and helpers use the constant, never the text (``tests/test_app_registry.py`` checks).
Keys are namespaced by page, with the namespaces registered in ``explorer.pages``
(``data.*``, ``model.*``, ``pool.*``, ``shrink.*``, ``fit.*``), plus ``app.*`` for the sidebar and
the gate and ``build.*`` for the model page's formula builder.

:func:`init`, called once at the top of every run by ``app.py``, gives the session-wide
keys their defaults.  A widget whose default depends on the table (a column of it, a
level) gets it from its page, which knows the table, just before it is drawn.  Widgets
whose value must survive a page switch are listed in ``PERSISTENT``: Streamlit drops a
widget's state when a run does not draw it, so :func:`init` writes those values back each
run (Streamlit's documented pattern).

A new page's keys: add constants under its namespace in the section of that page below;
add a key to ``PERSISTENT`` if its value must survive a visit to another page.

The URL query carries ``dataset``, ``formula`` and ``lecture``: read on a session's first
run, written back whenever they change, so a lecturer can post a link to a view.  While a
student works on their own file the query says ``upload=<its name>`` instead of a dataset:
a file is never stored, so a session that starts from such a URL (the student's server
was restarted, or the link was opened elsewhere) knows the file is gone and says so
(``DATA_LOST``) instead of silently showing other data.
"""

from __future__ import annotations

from urllib.parse import quote_plus, urlencode

import streamlit as st

from explorer.datasets import CATALOGUE, DEFAULT_KEY

# ----------------------------------------------------------------------- keys
# app: sidebar, gate, URL
APP_READY = "app.ready"              # init() has run in this session
APP_LECTURE = "app.lecture"          # sidebar toggle: lecture mode
APP_IMAGE_FORMAT = "app.image_format"  # "png" or "svg": what the charts' camera button saves
APP_ACCESS_OK = "app.access_ok"      # the access code was entered
APP_ACCESS_INPUT = "app.access_input"
APP_QUERY = "app.query"              # the query last written to the URL

# data: the dataset page and the sidebar's picker
DATA_KEY = "data.key"                # sidebar picker: a CATALOGUE key or one of data.USER_SLOTS
DATA_USER = "data.user"              # {slot in data.USER_SLOTS: {"label", "file", "df", "digest"}} this session only
DATA_TYPES = "data.types"            # {dataset key: {column: "numeric"|"categorical"}}
DATA_REFERENCE = "data.reference"    # {dataset key: {column: reference level}}
DATA_UPLOADER = "data.uploader"
DATA_UPLOAD_ERROR = "data.upload_error"
DATA_LOST = "data.lost"              # name of an uploaded file the URL refers to but this session lacks
DATA_TYPED = "data.typed"            # (signature, types, typed table) of the last run, small tables: reused while unchanged
DATA_CATEGORICAL = "data.categorical"  # multiselect: the columns treated as categorical
DATA_TYPE_ERROR = "data.type_error"  # why the last type switch was refused
DATA_REF_COLUMN = "data.ref_column"
DATA_REF_LEVEL = "data.ref_level"
DATA_WIDE_ID = "data.wide_id"        # wide-to-long reshape: id column, measures, new names
DATA_WIDE_MEASURES = "data.wide_measures"
DATA_WIDE_CONDITION = "data.wide_condition"
DATA_WIDE_VALUE = "data.wide_value"
DATA_WIDE_USE = "data.wide_use"
DATA_WIDE_DOWNLOAD = "data.wide_download"
DATA_PREVIEW_PAGE = "data.preview_page"  # lecture mode: the page of the preview's rows shown
DATA_COLUMNS_PAGE = "data.columns_page"  # lecture mode: the page of the column overview shown

# model: the model builder page
MODEL_FORMULA = "model.formula"      # the formula box (text)
MODEL_METHOD = "model.method"        # "REML" or "ML"
MODEL_FAMILY = "model.family"        # "gaussian" (lmer), "binomial" or "poisson" (glmer)
MODEL_SAVED = "model.saved"          # {name: {"formula", "reml", "kind", "dataset"}}
MODEL_SAVE_NAME = "model.save_name"
MODEL_SAVE_KIND = "model.save_kind"
MODEL_SAVE = "model.save"            # the Save button
MODEL_COMPARE = "model.compare"
MODEL_SECTION = "model.section"      # the model page's open tab (only that tab runs)
PAIRED_TAB = "Paired t-test"         # the label of the model page's paired t tab (a value of MODEL_SECTION)
MODEL_BUILDER_OPEN = "model.builder_open"  # the formula builder's expander is open (its menus run)
MODEL_RANEF_GROUP = "model.ranef_group"
MODEL_CAT_GROUP = "model.caterpillar_group"
MODEL_DDF = "model.ddf"              # p-values: "lme4" (none), "satterthwaite", "kenward-roger"
MODEL_DOWNLOAD_COEF = "model.download_coef"
MODEL_COEF_PAGE = "model.coef_page"  # lecture mode: the page of coef()'s rows shown
MODEL_FIXEF_PAGE = "model.fixef_page"
MODEL_LM_FIXEF_PAGE = "model.lm_fixef_page"
MODEL_RANEF_PAGE = "model.ranef_page"
MODEL_DOWNLOAD_RANEF = "model.download_ranef"
MODEL_DOWNLOAD_DATA = "model.download_data"
MODEL_CHART_OBSERVED = "model.chart_observed"
MODEL_CHART_RESIDUALS = "model.chart_residuals"
MODEL_CHART_QQ = "model.chart_qq"
MODEL_CHART_CATERPILLAR = "model.chart_caterpillar"
# model: the Intervals, Predictions and Model checks tabs (explorer.intervals_ui)
MODEL_CI_METHOD = "model.ci_method"  # "profile", "wald" or "boot"
MODEL_CI_LEVEL = "model.ci_level"
MODEL_BOOT_NSIM = "model.boot_nsim"
MODEL_BOOT_SEED = "model.boot_seed"
MODEL_BOOT_RUN = "model.boot_run"
MODEL_BOOT_STOP = "model.boot_stop"
MODEL_BOOT = "model.boot"            # the last bootstrap run: key, replicate blocks, status
MODEL_CHART_BOOT = "model.chart_boot"
MODEL_CI_PAGE = "model.ci_page"      # lecture mode: the page of the intervals' rows shown
MODEL_PREDICT_X = "model.predict_x"
MODEL_PREDICT_GROUP = "model.predict_group"
MODEL_CHART_PREDICT = "model.chart_predict"
MODEL_CHECKS_RANEF_GROUP = "model.checks_ranef_group"
MODEL_CHART_CHECKS_RESID = "model.chart_checks_resid"
MODEL_CHART_CHECKS_QQ = "model.chart_checks_qq"
MODEL_CHART_CHECKS_QQ_RANEF = "model.chart_checks_qq_ranef"  # + "_<column number>"
MODEL_INFLUENCE_GROUP = "model.influence_group"
MODEL_INFLUENCE_RUN = "model.influence_run"
MODEL_INFLUENCE_PAGE = "model.influence_page"  # lecture mode: the page of the influence table shown
MODEL_CHART_COOKS = "model.chart_cooks"
MODEL_CHART_SHIFTS = "model.chart_shifts"
MODEL_EQUATION_OF = "model.equation_of"        # "lmer" or "lm": whose equation the Equation tab shows
MODEL_CHART_CONDITION_FIT = "model.chart_condition_fit"      # paired tab: lm points, lmer lines
MODEL_CHART_CONDITION_RESID = "model.chart_condition_resid"  # paired tab: residuals of each

# build: the model page's formula builder (all dropped at once when the formula is typed)
BUILD_PREFIX = "build."
BUILD_RESPONSE = "build.response"
BUILD_FIXED = "build.fixed"
BUILD_INTERACTION = "build.interaction"
BUILD_GROUPS = "build.groups"
BUILD_RANDOM = "build.random"
BUILD_SLOPE = "build.slope"
BUILD_GROUPING = "build.grouping"
BUILD_APPLY = "build.apply"
BUILD_ERROR = "build.error"          # why the menus could not write a formula

# pool: the column pickers shared by the pooling and shrinkage pages, and the pooling page
POOL_RESPONSE = "pool.response"
POOL_PREDICTOR = "pool.predictor"
POOL_GROUP = "pool.group"
POOL_RANDOM = "pool.random"          # "intercept+slope", "intercept", "slope"
POOL_FAMILY = "pool.family"          # "gaussian" (lm, lmer), "binomial" or "poisson" (glm, glmer)
POOL_TRIALS = "pool.trials"          # binomial: the column of trials (cbind(y, trials - y)), or ONE_TRIAL
POOL_LINK_SCALE = "pool.link_scale"  # a glmer's panels on the link (logit/log) scale, not the data's
POOL_SELECTED = "pool.selected"      # groups picked to show (empty: page through all)
POOL_SORT = "pool.sort"
POOL_PAGE = "pool.page"
POOL_ZOOM_FEW = "pool.zoom_few"      # button: show only the groups with few observations
POOL_CHART = "pool.chart"
POOL_DOWNLOAD = "pool.download"
POOL_TABLE_PAGE = "pool.table_page"  # lecture mode: the page of the estimates table's rows shown
POOL_PAIRED = "pool.paired"          # button: this comparison as the paired t-test, on the model page

# shrink: the shrinkage page
SHRINK_HIGHLIGHT = "shrink.highlight"  # groups drawn strong and labelled on the 2-D shrinkage plot
SHRINK_HIGHLIGHT_FOR = "shrink.highlight_for"  # the (table, columns) that selection belongs to
SHRINK_CHART = "shrink.chart"
SHRINK_CONTRAST = "shrink.contrast"  # a factor of 3+ levels: the condition effect on the 2-D plot's y axis

# simulate: the Simulate page (one slider per lmmcore.simulate_scenario setting, SIM_SETTING_KEYS)
SIM_N_GROUPS = "simulate.n_groups"
SIM_N_PER_GROUP = "simulate.n_per_group"
SIM_IMBALANCE = "simulate.imbalance"
SIM_INTERCEPT = "simulate.intercept"
SIM_SLOPE = "simulate.slope"
SIM_SD_INTERCEPT = "simulate.sd_intercept"
SIM_SD_SLOPE = "simulate.sd_slope"
SIM_CORR = "simulate.corr"
SIM_SIGMA = "simulate.sigma"
SIM_CENTRE_X = "simulate.centre_x"
SIM_PRESET = "simulate.preset"        # "none" or a key of lmmcore.simulate.PRESETS
SIM_SEED = "simulate.seed"
SIM_RANDOM = "simulate.random"        # "intercept+slope" or "intercept": the fitted models
SIM_SECTION = "simulate.section"      # the open tab (only that tab runs)
SIM_SHRINKAGE_CHART = "simulate.shrinkage"
SIM_PANELS_OPEN = "simulate.panels_open"  # the per-group panels' expander is open (its content runs)
SIM_PANELS_CHART = "simulate.panels"
SIM_DOWNLOAD = "simulate.download"
SIM_REPEAT_RUN = "simulate.repeat_button"
SIM_REPEATS = "simulate.repeats"      # (settings signature, runs table) of the last "Repeat 200 times"
SIM_REPEAT_CHART = "simulate.repeat_chart"
SIM_COPIES_SEED = "simulate.copies_seed"  # "Simulate from this fit" (this page and the model page): the draw shown
SIM_COPIES_OPEN = "simulate.copies_open"  # its expander is open on this page (its content runs)
SIM_COPIES_NEW = "simulate.copies_new"    # its "New copies" button
SIM_COPIES_CHART = "simulate.copies_chart"
SIM_CV_RESPONSE = "simulate.cv_response"
SIM_CV_PREDICTOR = "simulate.cv_predictor"
SIM_CV_GROUP = "simulate.cv_group"
SIM_CV_RANDOM = "simulate.cv_random"
SIM_CV_SCHEME = "simulate.cv_scheme"
SIM_CV_K = "simulate.cv_k"
SIM_CV_FRACTION = "simulate.cv_fraction"
SIM_CV_SPLITS = "simulate.cv_splits"
SIM_CV_SEED = "simulate.cv_seed"
SIM_CV_RUN = "simulate.cv_run"
SIM_CV_RESULT = "simulate.cv_result"  # (choices signature, cross_validate table) of the last run
SIM_CV_CHART = "simulate.cv_chart"
SIM_POWER_SUBJECTS = "simulate.power_subjects"  # the Power tab's sliders (SIM_POWER_KEYS)
SIM_POWER_TRIALS = "simulate.power_trials"
SIM_POWER_EFFECT = "simulate.power_effect"
SIM_POWER_SD_SUBJECT = "simulate.power_sd_subject"
SIM_POWER_SIGMA = "simulate.power_sigma"
SIM_POWER_SIMS = "simulate.power_sims"
SIM_POWER_RUN = "simulate.power_run"
SIM_POWER_RESULT = "simulate.power_result"  # (settings signature, simulate_power table) of the last run
SIM_POWER_KEYS = {
    "n_subjects": SIM_POWER_SUBJECTS, "n_trials": SIM_POWER_TRIALS, "effect": SIM_POWER_EFFECT,
    "sd_subject": SIM_POWER_SD_SUBJECT, "sigma": SIM_POWER_SIGMA, "n_sims": SIM_POWER_SIMS,
}
SIM_SETTING_KEYS = {
    "n_groups": SIM_N_GROUPS, "n_per_group": SIM_N_PER_GROUP, "imbalance": SIM_IMBALANCE,
    "intercept": SIM_INTERCEPT, "slope": SIM_SLOPE, "sd_intercept": SIM_SD_INTERCEPT, "sd_slope": SIM_SD_SLOPE,
    "corr": SIM_CORR, "sigma": SIM_SIGMA, "centre_x": SIM_CENTRE_X,
}
# ... "Simulate from this fit" on the model page's Plots tab
MODEL_COPIES_OPEN = "model.copies_open"
MODEL_COPIES_NEW = "model.copies_new"
MODEL_CHART_COPIES = "model.chart_copies"

# fit: the "How the fit works" page
FIT_SECTION = "fit.section"          # the page's open view: criterion, REML and ML, singular fit
FIT_THETA = "fit.theta"              # slider: the theta of a one-knob model
FIT_PAIR = "fit.pair"                # the two theta elements of the contour map
FIT_DESCENT_PAGE = "fit.descent_page"  # lecture mode: the page of the optimiser's steps shown
FIT_ELEMENT = "fit.element"          # REML and ML: the theta element the curves run along
FIT_CHART = "fit.chart"              # the page's main chart (curve or contour map)
FIT_CHART_PARTS = "fit.chart_parts"
FIT_CHART_SHRINK = "fit.chart_shrinkage"
FIT_CHART_REML = "fit.chart_reml"
FIT_CHART_SINGULAR = "fit.chart_singular"
FIT_CHART_SINGULAR_SHRINK = "fit.chart_singular_shrinkage"

NO_PREDICTOR = "(none: intercept only)"
ONE_TRIAL = "0/1: one trial a row"

# DATA_KEY too: the sidebar draws it every run, but the rerun of a page's st.switch_page
# (the pooling page's link to the paired t-test) carries no widget values.
PERSISTENT = (
    DATA_KEY, MODEL_FORMULA, MODEL_METHOD, MODEL_FAMILY, POOL_RESPONSE, POOL_PREDICTOR, POOL_GROUP,
    POOL_RANDOM, POOL_FAMILY, POOL_TRIALS, POOL_LINK_SCALE,
    POOL_SELECTED, POOL_SORT, POOL_PAGE, APP_IMAGE_FORMAT, MODEL_COMPARE, MODEL_SAVE_KIND,
    MODEL_SECTION, MODEL_RANEF_GROUP, MODEL_CAT_GROUP, MODEL_BUILDER_OPEN, SHRINK_HIGHLIGHT,
    MODEL_DDF,
    *SIM_SETTING_KEYS.values(), SIM_PRESET, SIM_SEED, SIM_RANDOM, SIM_SECTION, SIM_CV_RESPONSE,
    SIM_CV_PREDICTOR, SIM_CV_GROUP, SIM_CV_RANDOM, SIM_CV_SCHEME, SIM_CV_K, SIM_CV_FRACTION, SIM_CV_SPLITS,
    SIM_CV_SEED, SIM_COPIES_OPEN, MODEL_COPIES_OPEN, SIM_PANELS_OPEN, *SIM_POWER_KEYS.values(),
    FIT_SECTION,
)


def _dataset_defaults(formula: str, response, predictor, group, family: str = "gaussian",
                      trials: str | None = None) -> dict:
    """A dataset's suggested formula and family, its pooling columns, and the pooling page's
    view reset."""
    return {
        MODEL_FORMULA: formula,
        MODEL_FAMILY: family,  # the suggested model's family (a built-in dataset's glmer)
        POOL_RESPONSE: response,
        POOL_PREDICTOR: predictor or NO_PREDICTOR,
        POOL_GROUP: group,
        POOL_FAMILY: family,
        POOL_TRIALS: trials or ONE_TRIAL,
        POOL_LINK_SCALE: False,
        # Binary or count data: a random intercept (lme4's usual model; a slope per group
        # leaves many small groups without their own glm estimate).
        POOL_RANDOM: "intercept+slope" if predictor and family == "gaussian" else "intercept",
        POOL_SELECTED: [],
        POOL_SORT: "name",
        POOL_PAGE: 1,
    }


def _catalogue_defaults(key: str) -> dict:
    d = CATALOGUE[key]
    return _dataset_defaults(d.formula, d.response, d.predictor, d.group, d.family, d.trials)


def init() -> None:
    """Give every key its default (first run of a session: from the URL query) and keep
    persistent widget values alive across pages.  Call first thing in every run."""
    ss = st.session_state
    if not ss.get(APP_READY):
        query = {k: st.query_params.get(k) for k in ("dataset", "formula", "lecture", "upload")}
        key = query["dataset"] if query["dataset"] in CATALOGUE else DEFAULT_KEY
        ss[DATA_KEY] = key
        ss[DATA_USER] = {}
        ss[DATA_TYPES] = {}
        ss[DATA_REFERENCE] = {}
        ss[DATA_UPLOAD_ERROR] = None
        # A new session has no uploaded file: if the URL names one, it was lost.
        ss[DATA_LOST] = str(query["upload"])[:200] if query["upload"] else None
        ss[MODEL_METHOD] = "REML"
        ss[MODEL_DDF] = "lme4"
        ss[MODEL_FAMILY] = "gaussian"
        ss[MODEL_SAVED] = {}
        ss[APP_LECTURE] = query["lecture"] in ("1", "true", "yes")
        ss[APP_IMAGE_FORMAT] = "png"
        ss[APP_ACCESS_OK] = False
        ss[APP_QUERY] = None
        for k, v in _catalogue_defaults(key).items():
            ss[k] = v
        if query["formula"]:
            # Only the first 2,000 characters: a link is not the place for a huge formula,
            # and lmmcore checks the rest.
            ss[MODEL_FORMULA] = str(query["formula"])[:2000]
        ss.update(simulation_defaults())
        ss[APP_READY] = True
    for k in PERSISTENT:
        if k in ss:
            ss[k] = ss[k]


def simulation_defaults(preset: str | None = None) -> dict:
    """The Simulate page's sliders at lmmcore's defaults, or at a preset's settings."""
    from lmmcore.simulate import DEFAULT_SETTINGS, PRESETS

    settings = PRESETS[preset].settings if preset in PRESETS else DEFAULT_SETTINGS
    values = {SIM_SETTING_KEYS[k]: v for k, v in settings.items()}
    if preset is None:
        # Seed 2: the first draw a student sees shows what happens on average (partial pooling
        # closest to the truth); seed 1 is a draw where no pooling wins the intercepts.
        values.update({SIM_PRESET: "none", SIM_SEED: 2, SIM_RANDOM: "intercept+slope", SIM_CV_SCHEME: "loo",
                       SIM_CV_K: 10, SIM_CV_FRACTION: 0.2, SIM_CV_SPLITS: 50, SIM_CV_SEED: 1,
                       SIM_COPIES_SEED: 1, SIM_POWER_SUBJECTS: 20, SIM_POWER_TRIALS: 1, SIM_POWER_EFFECT: 0.5,
                       SIM_POWER_SD_SUBJECT: 1.0, SIM_POWER_SIGMA: 1.0, SIM_POWER_SIMS: 200})
    return values


def reset_for_dataset(key: str, guessed: dict | None = None) -> None:
    """Set the formula and pooling choices to a dataset's suggestions (after a switch).

    ``guessed`` (from ``lmmcore.teaching.guess_roles``) stands in for the catalogue entry
    of an uploaded table.  Safe in a callback, before the widgets are drawn.
    """
    ss = st.session_state
    if key in CATALOGUE:
        values = _catalogue_defaults(key)
    else:
        g = guessed or {}
        values = _dataset_defaults(g.get("formula") or "", g.get("response"), g.get("predictor"),
                                   g.get("group"))
    for k, v in values.items():
        ss[k] = v
    clear_builder()


def clear_builder() -> None:
    """Drop the formula builder's menus: they are filled from the formula box when next drawn."""
    ss = st.session_state
    for k in list(ss.keys()):
        if str(k).startswith(BUILD_PREFIX):
            del ss[k]


def open_model(formula: str, section: str | None = None) -> None:
    """Set the model page's formula (and its open tab) for a link from another page;
    the caller then switches to ``explorer.pages.by_name("model")``."""
    ss = st.session_state
    ss[MODEL_FORMULA] = formula
    if section is not None:
        ss[MODEL_SECTION] = section
    clear_builder()


def share_query() -> dict:
    """The URL query of the current view: built-in dataset, formula, lecture mode."""
    ss = st.session_state
    q = {}
    if ss.get(DATA_KEY) in CATALOGUE:
        q["dataset"] = ss[DATA_KEY]
        formula = (ss.get(MODEL_FORMULA) or "").strip()
        if formula and formula != CATALOGUE[ss[DATA_KEY]].formula:
            q["formula"] = formula
    elif ss.get(DATA_KEY) in ss.get(DATA_USER, {}):
        # not shareable, but a session started from this URL knows a file is missing
        q["upload"] = ss[DATA_USER][ss[DATA_KEY]]["label"][:200]
    if ss.get(APP_LECTURE):
        q["lecture"] = "1"
    return q


def write_query() -> str:
    """Write the current view into the URL (only when it changed); return the query text."""
    q = share_query()
    # Compared with the URL itself, not a remembered copy: a page switch may clear it.
    if st.query_params.to_dict() != q:
        st.query_params.from_dict(q)
    st.session_state[APP_QUERY] = q
    return readable_query(q)


# Left as they are in a shared link: all are legal in a URL's query and mean nothing to
# Python's parse_qs (what Streamlit reads the query with).  "+" is not among them: in a
# query it reads back as a space, so a formula's "+" stays "%2B" and its spaces become "+".
LINK_SAFE = "~()|:,*/"


def readable_query(q: dict) -> str:
    """The query text for a link a person reads: ``Reaction+~+Days+%2B+(Days+|+Subject)``
    rather than every symbol percent-encoded; ``parse_qs`` gives back the same values."""
    return urlencode(q, safe=LINK_SAFE, quote_via=quote_plus)
