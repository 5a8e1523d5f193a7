"""The command line: fit or compare models on a data file and print R's output.

    python -m lmmcore fit DATA FORMULA [--ml] [--factor COL ...]
    python -m lmmcore compare DATA FORMULA FORMULA... [--ml] [--factor COL ...]

``fit`` prints lme4's ``summary()`` (or ``summary(lm())`` when the formula has no random
terms); ``compare`` prints lme4's ``anova()`` table.  Problems with the input are
printed as one message on stderr with exit code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lmmcore.errors import LmmError

USAGE_ERROR = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lmmcore",
                                description="Linear mixed models with lme4's numbers.")
    sub = p.add_subparsers(dest="command", required=True)
    for name, helptext in (("fit", "fit one model and print its summary"),
                           ("compare", "fit two or more models and print anova()")):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("data", help="CSV, TSV/TXT or XLSX file")
        if name == "fit":
            sp.add_argument("formula", help='e.g. "Reaction ~ Days + (Days | Subject)"')
        else:
            sp.add_argument("formulas", nargs="+", metavar="FORMULA", help="two or more formulas")
        sp.add_argument("--ml", action="store_true", help="maximum likelihood instead of REML")
        sp.add_argument("--factor", action="append", default=[], metavar="COL",
                        help="treat column COL as categorical (repeatable)")
    return p


def _load(path: str):
    from lmmcore.io import load_table

    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise LmmError(f"cannot read {path}: {exc.strerror or exc}") from None
    return load_table(raw, file.name), _data_name(file)


def _data_name(file: Path) -> str:
    stem = "".join(ch if (ch.isalnum() or ch in "._") else "_" for ch in file.stem)
    return stem or "data"


def _fit(formula: str, data, data_name: str, ml: bool, factors):
    from lmmcore.formula import parse_formula

    if parse_formula(formula).has_random:
        from lmmcore.mixed import lmer

        return lmer(formula, data, reml=not ml, categorical=factors or None, data_name=data_name)
    from lmmcore.linear import lm

    return lm(formula, data, categorical=factors or None, data_name=data_name)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        data, data_name = _load(args.data)
        unknown = [c for c in args.factor if c not in data.columns]
        if unknown:
            raise LmmError(f"--factor: no column {', '.join(map(repr, unknown))} in {args.data}; "
                           f"columns are: {', '.join(map(str, data.columns))}")
        if args.command == "fit":
            fit = _fit(args.formula, data, data_name, args.ml, args.factor)
            sys.stdout.write(fit.summary())
            for msg in getattr(fit, "messages", []):
                print(f"note: {msg}", file=sys.stderr)
        else:
            from lmmcore.compare import anova
            from lmmcore.printing import format_anova

            if len(args.formulas) < 2:
                raise LmmError("compare needs two or more formulas.")
            fits = [_fit(f, data, data_name, args.ml, args.factor) for f in args.formulas]
            table = anova(*fits)
            for note in table.attrs.get("notes", []):
                print(note, file=sys.stderr)
            sys.stdout.write(format_anova(table))
    except LmmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug, but the user still gets one line
        print(f"error: unexpected failure ({type(exc).__name__}: {exc}); please report it",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
