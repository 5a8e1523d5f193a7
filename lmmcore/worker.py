"""A fit in a separate process with a time limit: one student's large model cannot stall the server.

Streamlit runs every session as a thread of one Python process, so a fit that takes a
minute holds the GIL-bound work of that process and cannot be interrupted from outside.
Here a large fit runs in a child process that is killed when it passes its time limit;
the caller gets :class:`lmmcore.FitTimeout` with a message a student can act on.

Design points
-------------
* Children come from multiprocessing's ``"forkserver"`` context: a clean,
  single-threaded server process (started once, with numpy/scipy/pandas and the
  engine already imported) forks each child.  Plain ``fork`` from Streamlit's threaded
  server could copy a lock held by another thread and hang; ``"spawn"`` would re-import
  the scientific stack for every fit (about a second).
* At most ``max_workers`` children run at once (by default one per CPU), so a whole class
  pressing "fit" together queues instead of forking thirty processes.  Waiting for a free
  slot counts against the same time limit.
* Fits are picklable by contract (see ``MixedDesign.encoder``): the child sends the whole
  result object back through a pipe.  An :class:`lmmcore.LmmError` raised in the child is
  raised again in the caller with the same class and message.
* Nothing here imports streamlit; the app decides which fits go to a worker (see
  ``explorer.settings.Settings.worker_min_rows``).
* As with any non-fork start method, the program's main module must be importable
  without side effects: true for ``streamlit run``, pytest and ``python -m lmmcore``; a
  script of your own needs the ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import threading
import time
import traceback

from lmmcore.errors import FitError, FitTimeout

__all__ = ["fit_in_worker", "run_in_worker", "set_max_workers", "max_workers", "warm_up"]

# The forkserver imports these once; every child then starts with them in memory.
# A module that does not exist (yet) is skipped by multiprocessing, not an error.
# statsmodels is listed because lmmcore.linear imports it only on the first lm() call.
_PRELOAD = ["__main__", "numpy", "scipy.linalg", "scipy.optimize", "scipy.sparse", "pandas",
            "statsmodels.api", "lmmcore", "lmmcore.formula", "lmmcore.design", "lmmcore.mixed",
            "lmmcore.linear"]

# How long a killed child gets to exit before we stop waiting for it.
_REAP_SECONDS = 2.0

_lock = threading.Lock()
_context = None
_slots: threading.BoundedSemaphore | None = None
_max_workers = max(1, os.cpu_count() or 1)


class _RemoteTraceback(Exception):
    """Carries the child's traceback text as the ``__cause__`` of a re-raised error."""

    def __init__(self, tb: str):
        super().__init__(tb)
        self.tb = tb

    def __str__(self):
        return self.tb


def _get_context():
    global _context
    with _lock:
        if _context is None:
            method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
            ctx = multiprocessing.get_context(method)
            if method == "forkserver":
                ctx.set_forkserver_preload(_PRELOAD)
            _context = ctx
        return _context


def set_max_workers(n: int) -> None:
    """Set how many worker processes may run at once (call once, at start-up).

    Parameters
    ----------
    n : int
        At least 1.  Fits beyond this number wait for a free slot.
    """
    global _max_workers, _slots
    if int(n) < 1:
        raise ValueError("max_workers must be at least 1")
    with _lock:
        _max_workers = int(n)
        _slots = None  # rebuilt on next use; fits already running keep their old slot


def max_workers() -> int:
    """How many worker processes may run at once."""
    return _max_workers


def _get_slots() -> threading.BoundedSemaphore:
    global _slots
    with _lock:
        if _slots is None:
            _slots = threading.BoundedSemaphore(_max_workers)
        return _slots


def warm_up() -> None:
    """Start the fork server now, so the first large fit does not pay for it.

    Safe to call more than once and from any thread; the app may call it at start-up.
    """
    ctx = _get_context()
    if ctx.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def _child_main(conn, func, args, kwargs):
    """Run ``func`` in the child and send ``("ok", result)`` or an error record back."""
    try:
        result = func(*args, **kwargs)
        payload = ("ok", result)
    except BaseException as exc:  # noqa: BLE001 - everything must reach the parent
        payload = ("error", exc, type(exc).__module__, type(exc).__qualname__, str(exc),
                   traceback.format_exc())
    try:
        conn.send(payload)
    except Exception as exc:  # the result or the error would not pickle
        if payload[0] == "ok":
            conn.send(("error", None, "builtins", "RuntimeError",
                       f"the fit's result could not be sent back ({exc})", traceback.format_exc()))
        else:
            conn.send(("error", None) + payload[2:])
    finally:
        conn.close()


def _rebuild_error(record) -> BaseException:
    """The exception the child raised, as the same class when that is possible."""
    _, exc, module, qualname, message, tb = record
    if exc is None:
        import lmmcore.errors as errors

        cls = getattr(errors, qualname, None) if module == "lmmcore.errors" else None
        if isinstance(cls, type) and issubclass(cls, BaseException):
            exc = cls.__new__(cls)
            Exception.__init__(exc, message)
        else:
            exc = RuntimeError(f"{qualname}: {message}")
    exc.__cause__ = _RemoteTraceback(tb)
    return exc


def _timeout_message(timeout: float) -> str:
    return (f"This model took longer than {timeout:g} s and was stopped; try fewer groups/terms "
            "or ask your instructor to raise POOLING_FIT_TIMEOUT_S.")


def _stop(process) -> None:
    if process.is_alive():
        process.kill()
    process.join(_REAP_SECONDS)


def run_in_worker(func, *args, timeout: float, **kwargs):
    """Call ``func(*args, **kwargs)`` in a worker process and return its result.

    Parameters
    ----------
    func : callable
        A module-level function (it is sent to the child by reference, so it must be
        importable there).  Its arguments and result must be picklable.
    *args, **kwargs
        Passed to ``func``.
    timeout : float
        Seconds, counted from the call, including any wait for a free worker slot.

    Returns
    -------
    object
        What ``func`` returned.

    Raises
    ------
    lmmcore.FitTimeout
        The time limit passed; the child (if started) was killed.
    lmmcore.FitError
        The child died without an answer (e.g. killed for using too much memory).
    Exception
        Whatever ``func`` raised, as the same class and message, with the child's
        traceback as its ``__cause__``.
    """
    if not timeout > 0:
        raise ValueError("timeout must be a positive number of seconds")
    deadline = time.monotonic() + timeout
    ctx = _get_context()
    slots = _get_slots()
    if not slots.acquire(timeout=timeout):
        raise FitTimeout(
            f"The server is busy with other large fits and this one could not start within "
            f"{timeout:g} s; please try again in a minute.")
    try:
        receiver, sender = ctx.Pipe(duplex=False)
        process = ctx.Process(target=_child_main, args=(sender, func, args, kwargs),
                              name="lmmcore-fit", daemon=True)
        try:
            process.start()
        except BaseException:
            receiver.close()
            raise
        finally:
            # The child holds the only writing end now: if it dies, recv sees EOF.
            sender.close()
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise FitTimeout(_timeout_message(timeout))
                ready = multiprocessing.connection.wait([receiver, process.sentinel],
                                                        timeout=remaining)
                if receiver in ready:
                    try:
                        record = receiver.recv()
                    except (EOFError, OSError):
                        record = None
                    break
                if process.sentinel in ready:
                    # The child exited; a message it sent just before may still be waiting.
                    record = receiver.recv() if receiver.poll(0) else None
                    break
        finally:
            _stop(process)
            receiver.close()
            if process.exitcode is not None:
                process.close()
    finally:
        slots.release()

    if record is None:
        raise FitError(
            "The fit stopped unexpectedly (its worker process ended without an answer, "
            "perhaps out of memory); try a smaller model or fewer rows.")
    if record[0] == "ok":
        return record[1]
    raise _rebuild_error(record)


def _fit(kind: str, formula: str, data, kwargs):
    # Imported here so the child resolves lmmcore's public names itself.
    import lmmcore

    return getattr(lmmcore, kind)(formula, data, **kwargs)


_KINDS = ("lmer", "lm", "glmer")


def fit_in_worker(kind: str, formula: str, data, *, timeout: float, **kwargs):
    """Fit ``lmmcore.lmer``, ``lmmcore.lm`` or ``lmmcore.glmer`` in a worker process with
    a time limit.

    Parameters
    ----------
    kind : {"lmer", "lm", "glmer"}
    formula : str
    data : pandas.DataFrame
    timeout : float
        Seconds before the fit is stopped (``Settings.fit_timeout_s`` in the app).
    **kwargs
        Passed on, e.g. ``reml=False`` for ``lmer``, ``family="poisson"`` for ``glmer``.

    Returns
    -------
    MixedFit, LinearFit or GlmmFit
        The same object the in-process call returns.

    Raises
    ------
    lmmcore.FitTimeout
        The fit ran past ``timeout`` and was stopped.
    lmmcore.LmmError
        The formula, the data or the fit were rejected (same class and message as
        in process).
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, not {kind!r}")
    return run_in_worker(_fit, kind, formula, data, kwargs, timeout=timeout)

