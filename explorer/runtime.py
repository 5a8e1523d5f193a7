"""The server process's garbage collector: keep the per-run collection small.

Streamlit runs a full garbage collection after every script run (``runner.postScriptGC``,
on by default).  A full collection walks every object the collector tracks, and once
numpy, scipy, pandas, statsmodels, plotly and Streamlit are imported that is some
hundreds of thousands of objects: about 70 ms of CPU per run on this project's test
machine, holding the GIL, so every other session waits too; with 30 students changing
models at once it was the largest single cost of a run.

:func:`freeze_imported_heap` moves everything alive once the app's modules are imported
into the collector's permanent generation (``gc.freeze``, CPython's documented tool for
exactly this: long-lived start-up objects).  Later collections walk only objects created
since: the sessions' own state, fits and figures, which are still collected as before.
"""

from __future__ import annotations

import gc
import threading

_lock = threading.Lock()
_frozen = False


def freeze_imported_heap() -> bool:
    """Collect once, then freeze the heap; only the first call in a process does anything.

    Call after the app's heavy modules are imported.  Returns True on the call that froze.
    """
    global _frozen
    if _frozen:
        return False
    with _lock:
        if _frozen:
            return False
        gc.collect()  # garbage from the imports must not be frozen in
        gc.freeze()
        _frozen = True
        return True
