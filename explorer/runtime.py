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
is never collected.  Freezes happen only when the set of modules grows, a handful of
times per process, so what that can keep is bounded (the state of the sessions open at
those moments), not growing with the course's sessions.
"""

from __future__ import annotations

import gc
import sys
import threading

_lock = threading.Lock()
_modules_at_freeze = 0


def freeze_new_modules() -> bool:
    """Collect, then freeze the heap, if modules were imported since the last freeze.

    Call at the start and at the end of every run (cheap when nothing was imported: one
    ``len``).  Returns True when it froze.
    """
    global _modules_at_freeze
    if len(sys.modules) <= _modules_at_freeze:
        return False
    with _lock:
        if len(sys.modules) <= _modules_at_freeze:
            return False
        gc.collect()  # garbage must not be frozen in
        gc.freeze()
        _modules_at_freeze = len(sys.modules)
        return True
