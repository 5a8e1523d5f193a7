"""Memory under uploads (issue 12 part 5), the pieces that can be checked in one process:
the frozen heap is collected again (expired sessions are reference cycles), freed tables go
back to the operating system, and the load script's upload file has the stated size.
The whole scenario (30 sessions x 20 MB) is `make loadtest-upload`, figures in
deploy/README.md."""

import gc
import importlib.util
import sys
import weakref

import deploy_support as ds
from explorer import runtime


class _Session:
    """A stand-in for a Streamlit session: a reference cycle holding a table."""

    def __init__(self):
        self.me = self
        self.table = bytearray(1 << 20)


def test_a_frozen_session_cycle_is_freed_at_the_next_refreeze(monkeypatch):
    session = _Session()
    gone = weakref.ref(session)
    runtime.freeze_new_modules()
    monkeypatch.setitem(sys.modules, "pooling_explorer_memory_test", object())
    assert runtime.freeze_new_modules() is True  # a new import: the session is frozen in
    del session
    gc.collect()
    assert gone() is not None, "a frozen cycle is not collected by a plain collection"
    monkeypatch.setattr(runtime, "REFREEZE_S", 0.0)
    assert runtime.freeze_new_modules() is True
    assert gone() is None


def test_glibc_keeps_large_blocks_returnable():
    # True where the C library is glibc (the image and the test machine)
    assert runtime.keep_large_allocations_returnable() is True


def test_the_upload_scenarios_file_is_20_mb_and_under_the_limit():
    spec = importlib.util.spec_from_file_location("loadtest", ds.ROOT / "scripts" / "loadtest.py")
    loadtest = importlib.util.module_from_spec(spec)
    sys.modules["loadtest"] = loadtest
    spec.loader.exec_module(loadtest)
    data = loadtest.student_csv(2_000_000)
    assert 1_990_000 < len(data) <= 2_000_000
    lines = data.decode().splitlines()
    assert lines[0].startswith("participant,day,rt,item01")
    assert len({len(line.split(",")) for line in lines}) == 1  # no line cut short
