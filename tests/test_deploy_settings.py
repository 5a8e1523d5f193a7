"""The POOLING_* environment variables: defaults, parsing, and start-up errors naming the variable."""

import dataclasses

import pytest

from explorer.settings import Settings, SettingsError, load_settings


def test_defaults_when_nothing_is_set():
    s = load_settings({})
    assert (s.max_upload_mb, s.max_rows, s.max_columns) == (20, 200_000, 200)
    assert s.fit_timeout_s == 30.0
    assert s.worker_min_rows == 5000
    assert s.access_code is None
    assert not s.access_required
    assert s.max_upload_bytes == 20 * 1024 * 1024


def test_every_variable_is_read():
    s = load_settings({
        "POOLING_MAX_UPLOAD_MB": "5",
        "POOLING_MAX_ROWS": "1_000",
        "POOLING_MAX_COLUMNS": " 12 ",
        "POOLING_FIT_TIMEOUT_S": "2.5",
        "POOLING_WORKER_MIN_ROWS": "0",
        "POOLING_WORKER_MIN_COST": "2.5e6",
        "POOLING_ACCESS_CODE": "stats-2025",
        "UNRELATED": "x",
    })
    assert (s.max_upload_mb, s.max_rows, s.max_columns) == (5, 1000, 12)
    assert s.fit_timeout_s == 2.5
    assert s.worker_min_rows == 0
    assert s.worker_min_cost == 2.5e6
    assert s.access_code == "stats-2025"


def test_empty_values_mean_default():
    s = load_settings({"POOLING_MAX_ROWS": "", "POOLING_ACCESS_CODE": ""})
    assert s.max_rows == 200_000
    assert s.access_code is None


@pytest.mark.parametrize("name,value", [
    ("POOLING_MAX_UPLOAD_MB", "twenty"),
    ("POOLING_MAX_UPLOAD_MB", "0"),
    ("POOLING_MAX_ROWS", "1.5"),
    ("POOLING_MAX_ROWS", "-3"),
    ("POOLING_MAX_COLUMNS", "1e9"),
    ("POOLING_FIT_TIMEOUT_S", "nan"),
    ("POOLING_FIT_TIMEOUT_S", "inf"),
    ("POOLING_FIT_TIMEOUT_S", "0"),
    ("POOLING_WORKER_MIN_ROWS", "many"),
    ("POOLING_ACCESS_CODE", "   "),
])
def test_bad_value_names_the_variable(name, value):
    with pytest.raises(SettingsError) as info:
        load_settings({name: value})
    assert name in str(info.value)


def test_settings_are_frozen_and_hide_the_code():
    s = load_settings({"POOLING_ACCESS_CODE": "hunter2"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.max_rows = 1
    assert "hunter2" not in repr(s)


def test_access_code_check():
    s = load_settings({"POOLING_ACCESS_CODE": "Bates2015"})
    assert s.check_access_code("Bates2015")
    assert not s.check_access_code("bates2015")
    assert not s.check_access_code("")
    assert not s.check_access_code(None)
    assert not s.check_access_code("Bates2015 ")
    # no code set: the app is open to everyone
    assert Settings().check_access_code(None)
    assert Settings().check_access_code("anything")


def test_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("POOLING_MAX_COLUMNS", "7")
    assert load_settings().max_columns == 7
