"""No code path of the app runs user text as code or unpickles user bytes (a scan of the source)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The app's code: the library, the Streamlit helpers, the pages (sub-folders included).
FOLDERS = ("lmmcore", "explorer", "app_pages")
SOURCES = sorted([*(p for folder in FOLDERS for p in ROOT.glob(f"{folder}/**/*.py")), ROOT / "app.py"])

# Calls that run text as code, or turn bytes into arbitrary objects.
FORBIDDEN_NAMES = {"eval", "exec", "compile", "__import__", "execfile"}
FORBIDDEN_ATTRS = {
    ("pickle", "loads"), ("pickle", "load"), ("cPickle", "loads"), ("marshal", "loads"),
    ("marshal", "load"), ("dill", "loads"), ("joblib", "load"), ("yaml", "load"),
    ("shelve", "open"), ("os", "system"), ("os", "popen"), ("subprocess", "run"),
    ("subprocess", "Popen"), ("subprocess", "call"), ("subprocess", "check_output"),
    ("pd", "eval"), ("pandas", "eval"), ("np", "load"), ("numpy", "load"),
}
# DataFrame.eval / DataFrame.query evaluate expression strings (numexpr or Python).
FORBIDDEN_METHODS = {"eval", "query"}
# pandas readers that accept pickles or execute nothing-safe formats.
FORBIDDEN_CALL_NAMES = {"read_pickle", "unsafe_allow_javascript"}


def _dotted(node):
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return tuple(reversed(parts))


def _problems(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        where = f"{path.relative_to(ROOT)}:{node.lineno}"
        if isinstance(func, ast.Name) and func.id in FORBIDDEN_NAMES | FORBIDDEN_CALL_NAMES:
            found.append(f"{where}: {func.id}(...)")
        elif isinstance(func, ast.Attribute):
            dotted = _dotted(func)
            if dotted[-2:] in FORBIDDEN_ATTRS or func.attr in FORBIDDEN_CALL_NAMES:
                found.append(f"{where}: {'.'.join(dotted)}(...)")
            elif func.attr in FORBIDDEN_METHODS and dotted[:1] not in (("re",), ("regex",)):
                found.append(f"{where}: .{func.attr}(...) evaluates an expression string")
    return found


def test_sources_exist():
    """Every folder the scans read holds files: a renamed folder must not be scanned as empty."""
    assert any(p.parts[-2] == "lmmcore" for p in SOURCES)
    assert (ROOT / "lmmcore" / "formula.py") in SOURCES or not (ROOT / "lmmcore" / "formula.py").exists()
    for folder in FOLDERS:
        assert len([p for p in SOURCES if (ROOT / folder) in p.parents]) > 0, f"nothing scanned in {folder}/"
    assert (ROOT / "app.py").exists()


@pytest.mark.parametrize("path", [p for p in SOURCES if p.exists()],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_eval_exec_or_unpickling(path):
    assert _problems(path) == []


def test_the_scan_finds_what_it_looks_for(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import pickle, os\n"
                   "eval(text)\nexec(code)\npickle.loads(blob)\nos.system(cmd)\n"
                   "df.query(user)\nframe.eval(expr)\npd.read_pickle(f)\n__import__(name)\n")
    global ROOT
    old, ROOT = ROOT, tmp_path
    try:
        assert len(_problems(bad)) == 8
    finally:
        ROOT = old


def test_no_unsafe_html_with_user_text():
    """``unsafe_allow_html=True`` only where the text is the app's own or escaped.

    Every such call must be on a line (or the line before) that uses an escaping helper
    or a literal string: a reviewer's checklist turned into a test."""
    offenders = []
    for path in SOURCES:
        if not path.exists():
            continue
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if "unsafe_allow_html=True" in line:
                window = " ".join(lines[max(0, i - 3):i + 1])
                if not any(h in window for h in ("html_text(", "esc(", "md(", '"""', "'''")):
                    offenders.append(f"{path.relative_to(ROOT)}:{i + 1}: {line.strip()}")
    assert offenders == []
