"""Comparing printed R output with a tolerance for the last digits (test helper)."""

import re

import pytest

_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)(e[-+]\d+)?$")


def assert_same_printout(got: str, want: str, rel: float = 2e-3) -> None:
    """Line for line; a number may differ within ``rel`` (lme4's glmer optimum is only
    that precise in the last printed digit)."""
    got = got.rstrip("\n").splitlines()
    want = want.rstrip("\n").splitlines()
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if g == w:
            continue
        gt, wt = g.split(), w.split()
        assert len(gt) == len(wt), (g, w)
        for a, b in zip(gt, wt):
            if a != b:
                assert _NUMBER.match(a) and _NUMBER.match(b), (g, w)
                assert float(a) == pytest.approx(float(b), rel=rel, abs=rel), (g, w)
