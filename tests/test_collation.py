"""Factor levels in the order a student's R gives them (ICU en_US collation), against R."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmmcore.collation import collation_key
from lmmcore.design import build_design
from lmmcore.teaching import level_order

FIXTURE = json.loads((Path(__file__).parent / "fixtures/inference/collation.json").read_text())


@pytest.mark.parametrize("name", ["mixed_case", "conditions", "all"])
def test_sort_equals_r(name):
    case = FIXTURE[name]
    assert sorted(case["input"], key=collation_key) == case["sorted"]
    assert level_order(case["input"]) == case["sorted"]


def test_mixed_case_reference_level_is_rs():
    rng = np.random.default_rng(1)
    labels = ["b", "A", "a", "B"]
    data = pd.DataFrame({"y": rng.normal(size=40), "g": np.repeat(labels, 10),
                         "s": np.tile(["s1", "S2", "s3", "S4", "s5"], 8)})
    design = build_design("y ~ g + (1 | s)", data)
    # R: levels a A b B, so "a" is the reference and the columns are gA, gb, gB
    assert design.fixed_names == ("(Intercept)", "gA", "gb", "gB")
    assert design.random_terms[0].levels == ("s1", "S2", "s3", "S4", "s5")


def test_numbers_only_levels_sort_as_numbers():
    assert level_order(["10", "9", "1"]) == ["1", "9", "10"]
    design = build_design("y ~ g + (1 | s)", pd.DataFrame(
        {"y": np.arange(12.0) ** 1.5, "g": ["10", "9", "1"] * 4, "s": list("aabbccddeeff")}))
    assert design.fixed_names == ("(Intercept)", "g9", "g10")


def test_labels_of_one_case_sort_by_code_point_as_by_the_collation_key():
    """design's fast path: ASCII digits and letters of one case sort the same either way."""
    import random

    from lmmcore.design import _sorted_labels

    rng = random.Random(5)
    for alphabet in ("0123456789abcdefz", "0123456789ABCDEFZ", "ab"):
        labels = list({"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4)))
                       for _ in range(300)})
        assert _sorted_labels(labels) == sorted(labels, key=collation_key)
    # mixed case and punctuation take the collation key: a A b B, not A B a b
    assert _sorted_labels(["b", "A", "a", "B"]) == ["a", "A", "b", "B"]
    assert _sorted_labels(["g_2", "g-1", "g1"]) == sorted(["g_2", "g-1", "g1"], key=collation_key)
