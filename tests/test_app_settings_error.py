"""A bad course setting (POOLING_* variable) stops the app with a message naming it."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def test_a_bad_setting_is_named_not_a_traceback(monkeypatch):
    monkeypatch.setenv("POOLING_MAX_ROWS", "lots")
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception
    errors = [e.value.replace("\\", "") for e in at.error]  # markdown escapes
    assert len(errors) == 1
    assert "POOLING_MAX_ROWS" in errors[0]
    assert not at.title  # nothing of the app is drawn under a broken configuration
