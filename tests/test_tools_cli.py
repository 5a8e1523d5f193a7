"""The command line: python -m lmmcore fit / compare."""

import subprocess
import sys
from pathlib import Path

import pytest

from lmmcore.__main__ import main

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures" / "r"
SLEEP = str(ROOT / "data" / "sleepstudy.csv")


def test_fit_lm_prints_r_summary(capsys):
    assert main(["fit", SLEEP, "Reaction ~ Days"]) == 0
    assert capsys.readouterr().out == (FIX / "lm_sleepstudy_summary.txt").read_text(encoding="utf-8")


def test_fit_lmer_prints_lme4_summary(capsys):
    assert main(["fit", SLEEP, "Reaction ~ Days + (Days | Subject)", "--factor", "Subject", "--ml"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Linear mixed model fit by maximum likelihood")
    assert "Data: sleepstudy" in out
    assert "Number of obs: 180, groups:  Subject, 18" in out


def test_compare_prints_anova_and_refit_note(capsys):
    code = main(["compare", SLEEP, "Reaction ~ Days + (1 | Subject)",
                 "Reaction ~ Days + (Days | Subject)", "--factor", "Subject"])
    assert code == 0
    captured = capsys.readouterr()
    expected = (FIX / "anova_sleepstudy_int_slope.txt").read_text(encoding="utf-8")
    # Same table as R's, with the default row names (3 characters wider).
    assert captured.out == expected.replace("fm1", "model1").replace("fm2", "model2").replace(
        "    npar", "       npar")
    assert "refitting model(s) with ML (instead of REML)" in captured.err


@pytest.mark.parametrize("args,fragment", [
    (["fit", SLEEP, "Reaction ~ Days + (Days | Subject"], "never closed"),
    (["fit", "no_such_file.csv", "y ~ x"], "cannot read no_such_file.csv"),
    (["fit", SLEEP, "Reaction ~ Nope"], "Nope"),
    (["fit", SLEEP, "Reaction ~ Days", "--factor", "Nope"], "--factor"),
    (["compare", SLEEP, "Reaction ~ Days"], "two or more"),
])
def test_errors_are_one_line_exit_2(capsys, args, fragment):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err
    assert "Traceback" not in err


def test_module_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "lmmcore", "fit", SLEEP, "Reaction ~ (Days"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
