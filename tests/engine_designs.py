"""Hand-built MixedDesign objects for the lme4 fixture models (engine tests only).

The engine is tested against ``lmmcore.structure`` alone, independently of the formula
grammar: each fixture's design is assembled here with plain numpy from the CSV, with
level orders taken from the fixture (lme4's order).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from lmmcore.structure import MixedDesign, RandomTerm

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "lme4"
DATA = ROOT / "data"

FIXTURE_NAMES = sorted(p.stem for p in FIXTURES.glob("*.json"))


def load_fixture(name: str) -> dict:
    with open(FIXTURES / f"{name}.json") as fh:
        return json.load(fh)


def load_data(name: str) -> pd.DataFrame:
    return pd.read_csv(DATA / f"{name}.csv", dtype=str, keep_default_na=False)


class HandEncoder:
    """A minimal DesignEncoder for the hand-built designs (numeric columns only + factors)."""

    def __init__(self, fixed_spec, random_spec, levels):
        self.fixed_spec = fixed_spec
        self.random_spec = random_spec
        self.levels = levels

    def fixed_matrix(self, newdata):
        return _fixed(newdata, self.fixed_spec)[0]

    def group_codes(self, newdata):
        out = []
        for (gcols, zcols), levels in zip(self.random_spec, self.levels):
            lab = _labels(newdata, gcols)
            index = {lv: i for i, lv in enumerate(levels)}
            codes = np.array([index.get(v, -1) for v in lab], dtype=np.intp)
            out.append((codes, _zraw(newdata, zcols)))
        return out


def _labels(df, gcols):
    return df[gcols[0]].astype(str).str.cat([df[c].astype(str) for c in gcols[1:]], sep=":") \
        if len(gcols) > 1 else df[gcols[0]].astype(str)


def _zraw(df, zcols):
    cols = [np.ones(len(df)) if c == "1" else df[c].astype(float).to_numpy() for c in zcols]
    return np.column_stack(cols)


def _fixed(df, spec):
    """spec: list of (name, kind, args): 'one', ('num', col), ('dummy', col, level),
    ('prod', [subspecs])."""
    cols, names = [], []
    for name, item in spec:
        cols.append(_eval(df, item))
        names.append(name)
    return np.column_stack(cols) if cols else np.zeros((len(df), 0)), tuple(names)


def _eval(df, item):
    kind = item[0]
    if kind == "one":
        return np.ones(len(df))
    if kind == "num":
        return df[item[1]].astype(float).to_numpy()
    if kind == "dummy":
        return (df[item[1]].astype(str) == item[2]).astype(float).to_numpy()
    if kind == "prod":
        out = np.ones(len(df))
        for sub in item[1]:
            out = out * _eval(df, sub)
        return out
    raise ValueError(kind)


# Per fixture: dataset file, response, fixed spec, random spec [(group columns, z columns)]
# in lme4's term order, group names as lme4 prints them.
SPECS = {
    "sleepstudy_intercept": ("sleepstudy", "Reaction",
                             [("(Intercept)", ("one",)), ("Days", ("num", "Days"))],
                             [(["Subject"], ["1"], "Subject")]),
    "sleepstudy_slope": ("sleepstudy", "Reaction",
                         [("(Intercept)", ("one",)), ("Days", ("num", "Days"))],
                         [(["Subject"], ["1", "Days"], "Subject")]),
    "sleepstudy_slope_ml": ("sleepstudy", "Reaction",
                            [("(Intercept)", ("one",)), ("Days", ("num", "Days"))],
                            [(["Subject"], ["1", "Days"], "Subject")]),
    "sleepstudy_slope_only": ("sleepstudy", "Reaction",
                              [("(Intercept)", ("one",)), ("Days", ("num", "Days"))],
                              [(["Subject"], ["Days"], "Subject")]),
    "sleepstudy_uncorrelated": ("sleepstudy", "Reaction",
                                [("(Intercept)", ("one",)), ("Days", ("num", "Days"))],
                                [(["Subject"], ["1"], "Subject"), (["Subject"], ["Days"], "Subject")]),
    "dyestuff": ("Dyestuff", "Yield", [("(Intercept)", ("one",))], [(["Batch"], ["1"], "Batch")]),
    "dyestuff_ml": ("Dyestuff", "Yield", [("(Intercept)", ("one",))], [(["Batch"], ["1"], "Batch")]),
    "dyestuff2_singular": ("Dyestuff2", "Yield", [("(Intercept)", ("one",))],
                           [(["Batch"], ["1"], "Batch")]),
    "penicillin_crossed": ("Penicillin", "diameter", [("(Intercept)", ("one",))],
                           [(["plate"], ["1"], "plate"), (["sample"], ["1"], "sample")]),
    "pastes_nested": ("Pastes", "strength", [("(Intercept)", ("one",))],
                      [(["cask", "batch"], ["1"], "cask:batch"), (["batch"], ["1"], "batch")]),
    "orthodont": ("Orthodont", "distance",
                  [("(Intercept)", ("one",)), ("age", ("num", "age")),
                   ("SexMale", ("dummy", "Sex", "Male"))],
                  [(["Subject"], ["1", "age"], "Subject")]),
    "chickweight": ("ChickWeight", "weight",
                    [("(Intercept)", ("one",)), ("Time", ("num", "Time"))]
                    + [(f"Diet{d}", ("dummy", "Diet", str(d))) for d in (2, 3, 4)]
                    + [(f"Time:Diet{d}", ("prod", [("num", "Time"), ("dummy", "Diet", str(d))]))
                       for d in (2, 3, 4)],
                    [(["Chick"], ["1", "Time"], "Chick")]),
}

_ZNAMES = {"1": "(Intercept)"}


def _sorted_levels(values):
    uniq = sorted(set(values))
    try:
        return sorted(uniq, key=float)
    except ValueError:
        return uniq


def hand_design(name: str, data: pd.DataFrame | None = None) -> MixedDesign:
    """The MixedDesign of fixture ``name`` (optionally on other rows of the same data)."""
    dataset, response, fixed_spec, random_spec = SPECS[name]
    df = load_data(dataset) if data is None else data
    X, fixed_names = _fixed(df, fixed_spec)
    terms, all_levels = [], []
    for gcols, zcols, gname in random_spec:
        lab = _labels(df, gcols).to_numpy()
        if len(gcols) > 1:
            # lme4 orders an interaction's levels by its first factor, then the second
            parts = [_sorted_levels(df[c].astype(str)) for c in gcols]
            present = set(lab)
            levels = tuple(f"{a}:{b}" for a in parts[0] for b in parts[1] if f"{a}:{b}" in present)
        else:
            levels = tuple(_sorted_levels(lab))
        index = {lv: i for i, lv in enumerate(levels)}
        codes = np.array([index[v] for v in lab], dtype=np.intp)
        terms.append(RandomTerm(gname, levels, codes, tuple(_ZNAMES.get(c, c) for c in zcols),
                                _zraw(df, zcols)))
        all_levels.append(levels)
    enc = HandEncoder(fixed_spec, [(g, z) for g, z, _ in random_spec], all_levels)
    return MixedDesign(
        formula=load_fixture(name)["formula"] if name in FIXTURE_NAMES else name,
        response_name=response, y=df[response].astype(float).to_numpy(), X=X,
        fixed_names=fixed_names, dropped_fixed=(), random_terms=tuple(terms), n_dropped_na=0,
        row_index=df.index, encoder=enc)


def crossed_scalar_design(seed=5):
    """Three crossed scalar terms, large enough for the sparse Schur-pattern path."""
    from lmmcore.design import build_design
    rng = np.random.default_rng(seed)
    n = 4000
    g1, g2, g3 = rng.integers(0, 700, n), rng.integers(0, 420, n), rng.integers(0, 12, n)
    x = rng.normal(size=n)
    y = (1 + 0.5 * x + rng.normal(0, 0.7, 700)[g1] + rng.normal(0, 0.4, 420)[g2]
         + rng.normal(0, 0.3, 12)[g3] + rng.normal(size=n))
    data = pd.DataFrame({"y": y, "x": x, "g1": g1.astype(str), "g2": g2.astype(str),
                         "g3": g3.astype(str)})
    return build_design("y ~ x + (1 | g1) + (1 | g2) + (1 | g3)", data)
