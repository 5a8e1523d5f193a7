"""The server process's garbage collector: keep the collection after every run small.

Streamlit runs a full garbage collection after every script run (``runner.postScriptGC``,
on by default).  A full collection walks every object the collector tracks, and once
numpy, scipy, pandas, statsmodels, plotly and Streamlit are imported that is a few
hundred thousand objects: about 70 ms of CPU per run on this project's 2-core test
machine, holding the GIL, so every other session waits too.  With 30 students changing
models at once it was the largest single cost of a run.

:func:`freeze_new_modules` moves everything alive into the collector's permanent
generation (``gc.freeze``, CPython's tool for long-lived start-up objects) whenever a
run has imported new modules: the app imports most of its libraries at start-up, and
statsmodels, formulaic and plotly's figure classes on their first use.  Collections then
walk only the objects created since, chiefly the sessions' own state.

Frozen objects are still freed by reference counting; only a reference cycle among them
is never collected, and a Streamlit session is such a cycle.  A session open at a freeze
(its uploaded table included) would stay in memory for good after it expired, so at most
every :data:`REFREEZE_S` seconds the permanent generation is collected once (unfreeze,
full collection, freeze: one ~0.1 s collection a minute) and the state of expired
sessions is freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys
import threading
import time

_lock = threading.Lock()
_modules_at_freeze = 0
_frozen_at = 0.0
#: Seconds between collections of the frozen heap (see the module docstring).
REFREEZE_S = 60.0


def freeze_new_modules() -> bool:
    """Collect, then freeze the heap, if modules were imported since the last freeze, or
    if the last freeze is more than :data:`REFREEZE_S` seconds old (then the frozen heap
    is collected too).

    Call at the start and at the end of every run (cheap otherwise: a ``len`` and a
    clock reading).  Returns True when it froze.
    """
    global _modules_at_freeze, _frozen_at
    if len(sys.modules) <= _modules_at_freeze and time.monotonic() - _frozen_at < REFREEZE_S:
        return False
    with _lock:
        stale = time.monotonic() - _frozen_at >= REFREEZE_S
        if len(sys.modules) <= _modules_at_freeze and not stale:
            return False
        if stale:
            gc.unfreeze()  # expired sessions' cycles become collectable again
        gc.collect()  # garbage must not be frozen in
        gc.freeze()
        _modules_at_freeze = len(sys.modules)
        _frozen_at = time.monotonic()
        return True


# glibc's mallopt parameters (malloc.h).
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def keep_large_allocations_returnable() -> bool:
    """Make freed tables go back to the operating system (glibc only; a no-op elsewhere).

    glibc serves a block of 128 kB or more with its own ``mmap``, returned at ``free``,
    but raises that threshold each time such a block is freed (up to 32 MB), after which
    uploaded tables and their parsing buffers come from the heap, where freed memory
    stays with the process: measured, a server holding 30 students' 20 MB uploads kept
    all 2.5 GB after the sessions had expired.  A fixed threshold (setting it turns the
    adjustment off) and two heap arenas instead of eight per core (one per busy session
    thread) keep the memory of closed sessions returnable.  The same as the environment
    variables MALLOC_MMAP_THRESHOLD_=131072 MALLOC_ARENA_MAX=2, but also under
    ``make run`` and tests.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 128 * 1024)) and bool(mallopt(_M_ARENA_MAX, 2))


keep_large_allocations_returnable()
