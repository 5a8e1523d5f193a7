"""lmmcore: linear mixed-effects models that give lme4's numbers, in plain numpy/scipy.

The pipeline has lme4's four seams (Bates et al. 2015, JSS 67(1), Table 1):

1. ``lmmcore.design.build_design``  formula + data -> :class:`MixedDesign` (lFormula)
2. ``lmmcore.deviance``              design -> profiled deviance of theta (mkLmerDevfun)
3. ``lmmcore.optimize``              minimise it over theta (optimizeLmer)
4. ``lmmcore.mixed.MixedFit``        package the optimum (mkMerMod)

Public API (tests, pages and tools rely on these names):

- ``lmer(formula, data, reml=True) -> MixedFit``; on the fit, ``confint(method=...)``
  (``lmmcore.intervals``), ``predict(newdata, re_form, interval)`` (``lmmcore.prediction``)
  and ``influence(group)`` (``lmmcore.influence``)
- ``glmer(formula, data, family="binomial", nAGQ=1) -> GlmmFit`` (binomial logit, Poisson log);
  ``suggest_family(data, response) -> (family, reason)``
- ``lm(formula, data) -> LinearFit``
- ``anova(*fits, names=None) -> DataFrame``; ``format_anova(table) -> str`` prints it as R does
  (R's and lme4's printed layouts live in ``lmmcore.printing``; ``fit.summary()`` calls them)
- ``MixedFit.coef_table(ddf)`` / ``MixedFit.anova_fixed(ddf)``: lmerTest's t-tests and type III
  F-tests (Satterthwaite, Kenward-Roger); ``r2(fit)``: ``performance::r2_nakagawa``
- ``pooling_estimates(data, response, predictor, group) -> PoolingEstimates`` (the mixed fit,
  formulas, per-method table, group sizes, shrinkage; a factor predictor's condition effects
  and condition means); ``shrinkage_sd``, ``re_contours``
- ``simulate_groups``, ``simulate_scenario``, ``pooling_error``, ``repeat_pooling_error``,
  ``known_variance_rmse``: simulated groups with the truth known; ``cross_validate``;
  ``simulate_power`` (lmer Satterthwaite test vs paired t-test over simulated studies);
  ``MixedFit.simulate(nsim, seed)`` draws new responses from a fit (lme4's ``simulate``)
- ``lmmcore.fitview``: how the fit works, for teaching: the profiled criterion along theta
  (``criterion_curve``, ``criterion_surface``), the model at any theta with the criterion's
  parts (``state_at``, ``estimates_at``) and the optimiser's path (``optimizer_path``)
- ``model_equation(fit) -> ModelEquation``: the model as the lecture writes it (LaTeX lines,
  symbols with estimates, parameter count = anova's ``npar``)
- ``compare_lm(compact, augmented)`` (R's ``anova(lm_c, lm_a)`` F test and PRE; printed by
  ``format_lm_comparison``), ``information_criteria(anova_table, n)`` (AIC and BIC worked out)
- ``load_table(data: bytes, filename) -> DataFrame``
- ``parse_formula(text) -> Formula`` (its syntax tree: ``Formula.tree``, ``lmmcore.formula.Node``);
  ``compose_formula(response, fixed=..., groups=...) -> str`` writes one from menu choices
  (``lmmcore.formula_menu``)
- errors: ``LmmError`` and its subclasses ``FormulaError``, ``DataError``,
  ``FitError``, ``FitTimeout``, ``BootstrapCancelled``
"""

from lmmcore.errors import (BootstrapCancelled, DataError, FitError, FitTimeout, FormulaError,
                            LmmError)

__all__ = [
    "LmmError", "FormulaError", "DataError", "FitError", "FitTimeout", "BootstrapCancelled",
    "parse_formula", "compose_formula", "build_design",
    "lmer", "MixedFit", "glmer", "GlmmFit", "suggest_family", "lm", "LinearFit", "anova",
    "format_anova", "r2",
    "pooling_estimates", "PoolingEstimates", "shrinkage_sd", "re_contours", "load_table",
    "simulate_groups", "simulate_scenario", "pooling_error", "repeat_pooling_error",
    "known_variance_rmse", "cross_validate", "simulate_power",
    "model_equation", "compare_lm", "format_lm_comparison", "information_criteria",
]

# Public names resolve lazily (PEP 562): `import lmmcore` stays cheap for the worker
# processes and the command line, and each submodule is imported on first use.
_PUBLIC = {
    "parse_formula": "lmmcore.formula",
    "compose_formula": "lmmcore.formula_menu",
    "build_design": "lmmcore.design",
    "lmer": "lmmcore.mixed",
    "MixedFit": "lmmcore.mixed",
    "glmer": "lmmcore.generalized",
    "GlmmFit": "lmmcore.generalized",
    "suggest_family": "lmmcore.generalized",
    "lm": "lmmcore.linear",
    "LinearFit": "lmmcore.linear",
    "anova": "lmmcore.compare",
    "format_anova": "lmmcore.printing",
    "r2": "lmmcore.inference",
    "pooling_estimates": "lmmcore.pooling",
    "PoolingEstimates": "lmmcore.pooling",
    "shrinkage_sd": "lmmcore.pooling",
    "re_contours": "lmmcore.pooling",
    "load_table": "lmmcore.io",
    "simulate_groups": "lmmcore.simulate",
    "simulate_scenario": "lmmcore.simulate",
    "pooling_error": "lmmcore.simulate",
    "repeat_pooling_error": "lmmcore.simulate",
    "known_variance_rmse": "lmmcore.simulate",
    "cross_validate": "lmmcore.crossval",
    "simulate_power": "lmmcore.power",
    "model_equation": "lmmcore.equation",
    "compare_lm": "lmmcore.compare",
    "format_lm_comparison": "lmmcore.printing",
    "information_criteria": "lmmcore.compare",
}


def __getattr__(name):
    module_name = _PUBLIC.get(name)
    if module_name is None:
        raise AttributeError(f"module 'lmmcore' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
