"""The catalogue of built-in datasets: file, description, column roles and suggested model.

One entry per dataset in ``data/``.  The roles (``response``, ``predictor``, ``group``)
are the defaults of the pooling and shrinkage pages; ``paired`` marks a two-condition
within-group design for the paired t-test comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "data"


@dataclass(frozen=True)
class BuiltinDataset:
    """One built-in dataset.

    Attributes
    ----------
    key : str
        Short name used in the URL (``?dataset=sleepstudy``).
    file : str
        CSV file name in ``data/``.
    title : str
        Name shown in the picker.
    description : str
        One line for students.
    categorical : tuple of str
        Columns to treat as categorical (grouping columns stored as numbers included).
    formula : str
        Suggested lme4 formula.
    response, predictor, group : str or None
        Defaults for the pooling pages (``predictor`` None: intercept-only comparison).
    family : str
        Default family of the pooling pages: ``"gaussian"`` (lm, lmer), ``"binomial"``
        or ``"poisson"`` (glm, glmer).
    trials : str or None
        Binomial with several trials a row: the column of trials, the response being
        the successes (``cbind(response, trials - response)``); None for 0/1 data.
    """

    key: str
    file: str
    title: str
    description: str
    categorical: tuple
    formula: str
    response: str
    predictor: str | None
    group: str
    family: str = "gaussian"
    trials: str | None = None

    @property
    def path(self) -> Path:
        return DATA_DIR / self.file


_ALL = (
    BuiltinDataset(
        "sleepstudy_fake", "sleepstudy_fake.csv", "sleepstudy (2 incomplete)",
        "Reaction times over 10 days of sleep deprivation, 18 subjects plus subject 374 "
        "(2 days) and 373 (1 day): partial pooling for groups with little data.",
        ("Subject",), "Reaction ~ Days + (Days | Subject)", "Reaction", "Days", "Subject"),
    BuiltinDataset(
        "sleepstudy", "sleepstudy.csv", "sleepstudy",
        "Reaction times (ms) over 10 days of sleep deprivation, 18 subjects (lme4).",
        ("Subject",), "Reaction ~ Days + (Days | Subject)", "Reaction", "Days", "Subject"),
    BuiltinDataset(
        "df_original", "df_original.csv", "df_original (paired conditions)",
        "20 participants measured in 2 conditions: ignoring the dependence (lm) vs "
        "modelling it (lmer), which equals a paired t-test.",
        ("participant", "condition"), "value ~ condition + (1 | participant)",
        "value", None, "participant"),
    BuiltinDataset(
        "dyestuff", "Dyestuff.csv", "Dyestuff",
        "Yield of dyestuff from 6 batches, 5 samples each: one random intercept (lme4).",
        ("Batch",), "Yield ~ 1 + (1 | Batch)", "Yield", None, "Batch"),
    BuiltinDataset(
        "dyestuff2", "Dyestuff2.csv", "Dyestuff2 (singular fit)",
        "Simulated yields, 6 batches: the batch variance is estimated as 0 (a singular fit).",
        ("Batch",), "Yield ~ 1 + (1 | Batch)", "Yield", None, "Batch"),
    BuiltinDataset(
        "penicillin", "Penicillin.csv", "Penicillin (crossed)",
        "Inhibition zone diameters: 24 plates crossed with 6 penicillin samples (lme4).",
        ("plate", "sample"), "diameter ~ 1 + (1 | plate) + (1 | sample)",
        "diameter", None, "plate"),
    BuiltinDataset(
        "pastes", "Pastes.csv", "Pastes (nested)",
        "Paste strength: 3 casks nested in each of 10 batches, 2 assays each (lme4).",
        ("batch", "cask", "sample"), "strength ~ 1 + (1 | batch/cask)",
        "strength", None, "batch"),
    BuiltinDataset(
        "orthodont", "Orthodont.csv", "Orthodont",
        "Jaw growth (distance, mm) of 27 children from age 8 to 14, by sex (nlme).",
        ("Subject", "Sex"), "distance ~ age + Sex + (age | Subject)",
        "distance", "age", "Subject"),
    BuiltinDataset(
        "chickweight", "ChickWeight.csv", "ChickWeight",
        "Weights of 50 chicks on 4 diets over 21 days, unbalanced (R datasets).",
        ("Chick", "Diet"), "weight ~ Time * Diet + (Time | Chick)",
        "weight", "Time", "Chick"),
    BuiltinDataset(
        "bdf", "bdf.csv", "bdf (repeated a grade, binary)",
        "2,283 pupils in 131 Dutch schools: did a pupil repeat a grade (0/1), by socio-economic "
        "status (nlme): a logistic mixed model.",
        ("schoolNR", "minority"), "repeatgr ~ 1 + ses + minority + (1 | schoolNR)",
        "repeatgr", "ses", "schoolNR", "binomial"),
    BuiltinDataset(
        "cbpp", "cbpp.csv", "cbpp (disease incidence out of herd size)",
        "New cases of bovine pleuropneumonia out of the herd's size, 15 herds in 4 periods "
        "(lme4): binomial with several trials a row, cbind(incidence, size - incidence); the "
        "pooling pages compare each herd's proportion of new cases.",
        ("herd", "period"), "cbind(incidence, size - incidence) ~ period + (1 | herd)",
        "incidence", None, "herd", "binomial", "size"),
    BuiltinDataset(
        "grouseticks", "grouseticks.csv", "grouseticks (tick counts)",
        "Ticks on 403 red grouse chicks by height of the site (centred, cHEIGHT), in 118 "
        "broods at 63 locations (lme4): Poisson counts, crossed groupings.",
        ("BROOD", "LOCATION", "YEAR", "INDEX"),
        "TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | LOCATION)",
        "TICKS", "cHEIGHT", "LOCATION", "poisson"),
)

CATALOGUE: dict[str, BuiltinDataset] = {d.key: d for d in _ALL}
DEFAULT_KEY = "sleepstudy_fake"


def read_bytes(key: str) -> bytes:
    """The raw bytes of a built-in dataset's CSV file."""
    return CATALOGUE[key].path.read_bytes()
