"""What a course may change on its server: limits and an access code, read from the environment.

Each setting is one ``POOLING_*`` environment variable with a default that suits a class
of about 30 students on a small machine.  A bad value stops the app at start-up with a
message naming the variable, rather than surfacing later as a confusing failure in a
student's session.  This module does not import streamlit, so the limits can be checked
by tests and by ``lmmcore.worker`` callers alike.

=========================  =========  ===================================================
variable                   default    meaning
=========================  =========  ===================================================
POOLING_MAX_UPLOAD_MB      20         largest uploaded file, in megabytes
POOLING_MAX_ROWS           200000     most rows an uploaded table may have
POOLING_MAX_COLUMNS        200        most columns an uploaded table may have
POOLING_FIT_TIMEOUT_S      30         seconds any fit may run before it is stopped
POOLING_WORKER_MIN_ROWS    5000       fits on at least this many rows run in a worker
                                      process
POOLING_WORKER_MIN_COST    1e8        so do smaller fits whose estimated cost (random-
                                      effect columns x levels, crossed terms, see
                                      lmmcore.worker.estimate_cost) reaches this; the
                                      rest run in the session's thread, under the same
                                      time limit
POOLING_ACCESS_CODE        (unset)    if set, students must type it before using the app
=========================  =========  ===================================================
"""

from __future__ import annotations

import hmac
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Settings", "SettingsError", "load_settings", "ENV_VARS"]


class SettingsError(ValueError):
    """A ``POOLING_*`` environment variable holds a value the app cannot use."""


@dataclass(frozen=True)
class Settings:
    """The server's limits, fixed for the life of the process.

    Attributes
    ----------
    max_upload_mb : int
        Largest uploaded file in megabytes (also Streamlit's ``server.maxUploadSize``).
    max_rows : int
        Most rows an uploaded table may have.
    max_columns : int
        Most columns an uploaded table may have.
    fit_timeout_s : float
        Seconds any fit may run before it is stopped (in a worker or in the session).
    worker_min_rows : int
        Fits on at least this many rows run in a worker process.
    worker_min_cost : float
        Fits whose estimated cost (``lmmcore.worker.estimate_cost``) reaches this run in a
        worker process too, whatever their rows.
    access_code : str or None
        The class's access code; ``None`` leaves the app open.
    """

    max_upload_mb: int = 20
    max_rows: int = 200_000
    max_columns: int = 200
    fit_timeout_s: float = 30.0
    worker_min_rows: int = 5000
    worker_min_cost: float = 1e8
    # repr=False: the code must not end up in a log line or an error report.
    access_code: str | None = field(default=None, repr=False)

    @property
    def max_upload_bytes(self) -> int:
        """``max_upload_mb`` in bytes (Streamlit counts a megabyte as 2**20 bytes)."""
        return self.max_upload_mb * 1024 * 1024

    @property
    def access_required(self) -> bool:
        """Whether students must enter the access code."""
        return self.access_code is not None

    def check_access_code(self, attempt: str | None) -> bool:
        """Whether ``attempt`` is the access code (always true when none is set).

        ``hmac.compare_digest`` takes the same time whatever the first wrong character,
        so the code cannot be guessed one character at a time from response times.
        """
        if self.access_code is None:
            return True
        if not isinstance(attempt, str):
            return False
        return hmac.compare_digest(attempt.encode("utf-8"), self.access_code.encode("utf-8"))


# name -> (field, parser, lower bound, upper bound); the bounds keep a typo such as an
# extra zero from turning a limit into no limit at all.
ENV_VARS = {
    "POOLING_MAX_UPLOAD_MB": ("max_upload_mb", int, 1, 2048),
    "POOLING_MAX_ROWS": ("max_rows", int, 1, 50_000_000),
    "POOLING_MAX_COLUMNS": ("max_columns", int, 1, 100_000),
    "POOLING_FIT_TIMEOUT_S": ("fit_timeout_s", float, 0.1, 24 * 3600),
    "POOLING_WORKER_MIN_ROWS": ("worker_min_rows", int, 0, 1_000_000_000),
    "POOLING_WORKER_MIN_COST": ("worker_min_cost", float, 0, 1e18),
}


def _bound(value: float) -> str:
    # "50,000,000", not "5e+07": an administrator reads these, not a parser.
    return f"{value:,}" if float(value).is_integer() else f"{value:g}"


def _parse_number(name: str, text: str, kind: type, low: float, high: float):
    cleaned = text.strip().replace("_", "")
    what = "a whole number" if kind is int else "a number"
    try:
        value = kind(cleaned)
    except ValueError:
        raise SettingsError(
            f"{name}={text!r} is not {what}; set it to {what} between {_bound(low)} and {_bound(high)}"
            " or unset it to use the default."
        ) from None
    if kind is float and not math.isfinite(value):
        raise SettingsError(f"{name}={text!r} must be a finite number of seconds.")
    if not low <= value <= high:
        raise SettingsError(
            f"{name}={text!r} is out of range; use {what} between {_bound(low)} and {_bound(high)}."
        )
    return value


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read the ``POOLING_*`` variables into a :class:`Settings`.

    Parameters
    ----------
    env : mapping, optional
        The environment to read; ``os.environ`` when omitted.  Unset or empty
        variables take their defaults.

    Returns
    -------
    Settings

    Raises
    ------
    SettingsError
        A variable is not a number, is out of its range, or the access code is blank;
        the message names the variable.
    """
    if env is None:
        env = os.environ
    values = {}
    for name, (attr, kind, low, high) in ENV_VARS.items():
        text = env.get(name)
        if text is None or text.strip() == "":
            continue
        values[attr] = _parse_number(name, text, kind, low, high)

    code = env.get("POOLING_ACCESS_CODE")
    if code is not None:
        if code == "":
            code = None  # an empty variable is how compose files "unset" a value
        elif code.strip() == "":
            raise SettingsError(
                "POOLING_ACCESS_CODE is only spaces; set a real code or unset it to leave"
                " the app open."
            )
        else:
            code = code.strip()
    values["access_code"] = code
    return Settings(**values)
