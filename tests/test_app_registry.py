"""The registries hold: every page is one file plus one line in ``explorer.pages``, and every
session-state key is a constant in ``explorer.state`` under a registered namespace (a scan
of the source, so a new page or key that bypasses them fails here, not in a merge)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from explorer import pages
from explorer import state as S

ROOT = Path(__file__).resolve().parents[1]
# Code that draws widgets or reads session state; explorer/state.py is the registry itself.
CODE = sorted([*ROOT.glob("app_pages/**/*.py"), *ROOT.glob("explorer/**/*.py"), ROOT / "app.py"])
KEY_TEXT = re.compile(r"^[a-z_]+\.[a-z_]+$")


def _state_keys() -> dict:
    """Name -> value of every key constant in explorer.state."""
    return {name: value for name, value in vars(S).items()
            if name.isupper() and isinstance(value, str) and KEY_TEXT.match(value)}


def test_every_page_is_a_file_and_every_file_a_page():
    files = {p.stem for p in (ROOT / "app_pages").glob("*.py")}
    assert set(pages.names()) == files
    assert len(set(pages.names())) == len(pages.PAGES)
    assert pages.HOME not in pages.names()
    for page in pages.PAGES:
        assert (ROOT / page.script).is_file()
        assert page.icon.startswith(":material/") and page.title


def test_every_key_is_unique_and_in_a_registered_namespace():
    keys = _state_keys()
    assert len(keys) > 30
    assert len(set(keys.values())) == len(keys), "two constants name the same key"
    namespaces = {p.namespace for p in pages.PAGES} | set(pages.SHARED_NAMESPACES)
    outside = {n: v for n, v in keys.items() if v.split(".")[0] not in namespaces}
    assert outside == {}
    assert set(S.PERSISTENT) <= set(keys.values())


def _literal_keys(path: Path, root: Path = ROOT) -> list[str]:
    """Key text written inline: ``key="..."`` and ``session_state["..."]`` / ``ss["..."]``."""
    found = []
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        where = f"{path.relative_to(root)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.keyword) and node.arg == "key" \
                and isinstance(node.value, (ast.Constant, ast.JoinedStr)):
            found.append(f"{where}: key={ast.unparse(node.value)}")
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) \
                and isinstance(node.slice.value, str) and KEY_TEXT.match(node.slice.value):
            target = ast.unparse(node.value)
            if target == "ss" or target.endswith("session_state"):
                found.append(f"{where}: {ast.unparse(node)}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in ("get", "pop", "setdefault") and node.args \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str) \
                and KEY_TEXT.match(node.args[0].value):
            target = ast.unparse(node.func.value)
            if target == "ss" or target.endswith("session_state"):
                found.append(f"{where}: {ast.unparse(node)}")
    return found


def test_no_page_or_helper_writes_a_key_inline():
    scanned = [p for p in CODE if p != ROOT / "explorer" / "state.py"]
    assert any("app_pages" in p.parts for p in scanned) and any("explorer" in p.parts for p in scanned)
    offenders = [hit for path in scanned for hit in _literal_keys(path)]
    assert offenders == []


def test_the_scan_finds_inline_keys(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('st.button("x", key="pool.zoom")\nst.session_state["model.formula"] = 1\n'
                   'ss.get("app.lecture")\nst.text_input("y", key=f"model.{name}")\n'
                   'st.button("ok", key=S.POOL_ZOOM_FEW)\nopen("data.csv")\n')
    assert len(_literal_keys(bad, tmp_path)) == 4
