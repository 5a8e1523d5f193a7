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
* Every fit has a time limit, wherever it runs (:func:`fit_limited`).  A fit goes to a
  worker when its table is large or when its *estimated cost* is (:func:`estimate_cost`:
  random-effect columns x levels, crossed terms, parameters to optimise; not rows alone),
  because only a process can be stopped at once, even inside one long LAPACK call.  A cheap
  fit runs in the caller's thread, where forking would cost more than the fit, under a
  cooperative limit (:func:`call_with_time_limit`): the thread is interrupted at its next
  Python instruction once the limit passes.
* Nothing here imports streamlit; the app passes its settings (see
  ``explorer.settings.Settings``).
* The children never import the program's main module: under ``streamlit run`` the main
  module seen from a session's thread is the app script itself, and importing it would
  run the whole app, bare, in every child (about a second and a Streamlit warning per
  fit).  So the function a child runs must live in an importable module, not in the
  ``__main__`` script.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.connection
import os
import threading
import time
import traceback

from lmmcore.errors import FitError, FitTimeout

__all__ = ["fit_in_worker", "run_in_worker", "set_max_workers", "max_workers", "warm_up",
           "estimate_cost", "call_with_time_limit", "fit_limited", "DEFAULT_WORKER_MIN_COST"]

# The forkserver imports these once; every child then starts with them in memory.
# A module that does not exist (yet) is skipped by multiprocessing, not an error.
# statsmodels is listed because lmmcore.linear imports it only on the first lm() call.
_PRELOAD = ["numpy", "scipy.linalg", "scipy.optimize", "scipy.sparse", "pandas",
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


_PROCESS_NAME = "lmmcore-fit"


def _without_main(get_preparation_data):
    """multiprocessing's start-up data for a child, minus "import the main module" for
    our fit processes (see the module docstring)."""
    def preparation_data(name):
        data = get_preparation_data(name)
        if name == _PROCESS_NAME:
            data.pop("init_main_from_name", None)
            data.pop("init_main_from_path", None)
        return data

    preparation_data.lmmcore_without_main = True
    return preparation_data


def _get_context():
    global _context
    with _lock:
        if _context is None:
            from multiprocessing import spawn

            if not getattr(spawn.get_preparation_data, "lmmcore_without_main", False):
                spawn.get_preparation_data = _without_main(spawn.get_preparation_data)
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
                              name=_PROCESS_NAME, daemon=True)
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



# --------------------------------------------------------------------------- cost and limits

#: Estimated cost (see :func:`estimate_cost`) from which a fit goes to a worker process.
#: On the 2-core test machine 1e8 is roughly 0.2-0.6 s of fitting: below it forking and
#: pickling would cost more than the fit; above it a fit could hold the GIL for long.
DEFAULT_WORKER_MIN_COST = 1e8


def estimate_cost(design) -> float:
    """A rough operation count of fitting ``design`` (a :class:`lmmcore.structure.MixedDesign`).

    Follows the engine's blocked factor (``lmmcore.deviance``): the lead term (the one
    with most columns x levels) is block diagonal, every other term goes into one dense
    block of ``q2`` columns, factored at every evaluation of the deviance; the optimiser
    needs more evaluations the more variance parameters there are.  Calibrated on the
    test machine to within a factor of about 5 of the measured time (cost 1e8 ~ 0.2-0.6 s,
    1e11 ~ 90 s for two crossed 200-level factors with three columns each on 4,999 rows);
    it decides where a fit runs, the time limit does the rest.

    Parameters
    ----------
    design : MixedDesign
        From ``lmmcore.design.build_design`` (cheap next to the fit).

    Returns
    -------
    float
        Larger means slower; an ``lm`` formula (no random terms) costs ``n p^2``.
    """
    n, p = design.X.shape
    terms = design.random_terms
    if not terms:
        return float(n) * (p + 1) ** 2
    ks = [t.n_columns for t in terms]
    ms = [t.n_levels for t in terms]
    sizes = [k * m for k, m in zip(ks, ms)]
    lead = max(range(len(terms)), key=sizes.__getitem__)
    k1, m1, q1 = ks[lead], ms[lead], sizes[lead]
    q2 = sum(sizes) - q1
    rest_scalar = all(k == 1 for i, k in enumerate(ks) if i != lead)
    total_k = sum(ks)
    n_theta = sum(k * (k + 1) // 2 for k in ks)
    setup = float(n) * (total_k + p + 1) ** 2                     # the cross products, once
    per_evaluation = (m1 * k1 ** 3 + (100.0 * m1 * k1 ** 2 if k1 > 1 else 0.0)  # lead blocks
                      + (1.0 if rest_scalar else 10.0) * q2 ** 3 / 3.0        # dense block
                      + float(min(q2 * q1, n * total_k ** 2)) * k1)           # coupling
    evaluations = 20 + 10 * n_theta
    return setup + evaluations * per_evaluation


class _Deadline(BaseException):
    """Raised inside a thread whose time limit passed (a BaseException, so no
    ``except Exception`` on the way up can swallow it)."""


def _set_async_exc(thread_id: int, exc_type) -> None:
    # None is passed as NULL: withdraw a pending exception.
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), None if exc_type is None else ctypes.py_object(exc_type))


def call_with_time_limit(func, *args, timeout: float, **kwargs):
    """Call ``func(*args, **kwargs)`` in this thread; stop it with :class:`FitTimeout` after ``timeout`` s.

    A timer thread raises an exception in this thread when the limit passes (CPython's
    ``PyThreadState_SetAsyncExc``, the mechanism behind ``KeyboardInterrupt`` in threads).
    It takes effect at the next Python instruction, so a single long C call (one LAPACK
    factorisation) finishes first: that is why large fits go to a worker process, which
    can be killed at once.  ``with`` blocks and ``finally`` clauses on the way out run as
    usual.

    Parameters
    ----------
    func : callable
    timeout : float
        Seconds.

    Returns
    -------
    object
        What ``func`` returned.

    Raises
    ------
    lmmcore.FitTimeout
        The limit passed before ``func`` returned.
    """
    if not timeout > 0:
        raise ValueError("timeout must be a positive number of seconds")
    thread_id = threading.get_ident()
    guard = threading.Lock()
    state = {"running": True, "fired": False}

    def fire():
        with guard:
            if state["running"]:
                state["fired"] = True
                _set_async_exc(thread_id, _Deadline)

    timer = threading.Timer(timeout, fire)
    timer.daemon = True
    timer.name = "lmmcore-fit-limit"
    try:
        timer.start()
        try:
            return func(*args, **kwargs)
        finally:
            with guard:
                state["running"] = False
                if state["fired"]:
                    # Fired just as func returned: withdraw a pending exception so it cannot
                    # surface later in unrelated code.
                    _set_async_exc(thread_id, None)
            timer.cancel()
            timer.join()  # no timer thread outlives the call
    except _Deadline:
        raise FitTimeout(_timeout_message(timeout)) from None


def _fit_design(design, reml: bool, data_name: str):
    from lmmcore.mixed import fit_design

    return fit_design(design, reml=reml, data_name=data_name)


def fit_limited(kind: str, formula: str, data, *, timeout: float, worker_min_rows: int = 5000,
                worker_min_cost: float = DEFAULT_WORKER_MIN_COST, **kwargs):
    """Fit ``lmmcore.lmer``, ``lm`` or ``glmer`` under a time limit, in a worker when it is costly.

    A table of at least ``worker_min_rows`` rows goes to a worker process as it is
    (:func:`fit_in_worker`).  Otherwise the model's design is built here (cheap), and
    a fit whose :func:`estimate_cost` reaches ``worker_min_cost`` is sent, as that design,
    to a worker; a cheaper one runs in this thread under :func:`call_with_time_limit`.
    An ``lm`` (least squares, cheap for any table under ``worker_min_rows``) and a ``glmer``
    (no cost estimate yet; it also checks the limit itself) run in this thread under the
    same limit.

    Parameters
    ----------
    kind : {"lmer", "lm", "glmer"}
    formula : str
    data : pandas.DataFrame
    timeout : float
        Seconds; applies wherever the fit runs.
    worker_min_rows : int
    worker_min_cost : float
    **kwargs
        ``categorical``, ``numeric``, ``reference_levels``; for ``lmer`` also ``reml`` and
        ``data_name``.

    Returns
    -------
    MixedFit or LinearFit

    Raises
    ------
    lmmcore.FitTimeout
        The fit ran past ``timeout``.
    lmmcore.LmmError
        The formula, the data or the fit were rejected.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, not {kind!r}")
    if len(data) >= worker_min_rows:
        return fit_in_worker(kind, formula, data, timeout=timeout, **kwargs)
    if kind == "lm":
        return call_with_time_limit(_fit, kind, formula, data, kwargs, timeout=timeout)
    if kind == "glmer":
        # The Laplace fit checks its own limit too (time_limit); the rows decide where it runs.
        return call_with_time_limit(_fit, kind, formula, data, {**kwargs, "time_limit": timeout},
                                    timeout=timeout)
    from lmmcore.design import build_design

    reml = kwargs.pop("reml", True)
    data_name = kwargs.pop("data_name", "data")
    design = build_design(formula, data, **kwargs)
    if estimate_cost(design) >= worker_min_cost:
        return run_in_worker(_fit_design, design, reml, data_name, timeout=timeout)
    return call_with_time_limit(_fit_design, design, reml, data_name, timeout=timeout)
