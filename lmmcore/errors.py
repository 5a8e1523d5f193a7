"""The exceptions lmmcore raises for bad input: each message tells a student what to do.

Every public function turns a problem with the user's formula, data or model into one
of these; nothing else escapes the public API for bad input.  ``LmmError`` is a
``ValueError`` so generic callers that catch ``ValueError`` keep working.
"""


class LmmError(ValueError):
    """Base class: a problem with the input that the user can fix."""


class FormulaError(LmmError):
    """The formula text cannot be parsed or uses something not allowed.

    ``position`` is the 0-based character offset of the problem in the formula (for an
    unknown column, where the name first appears), or ``None`` when it is not at one place.
    """

    def __init__(self, message: str, position: int | None = None, formula: str | None = None):
        super().__init__(message)
        self.position = position
        self.formula = formula


class DataError(LmmError):
    """The data cannot be read or do not fit the model (missing column, too few rows...)."""


class FitError(LmmError):
    """The model cannot be fitted to these data (e.g. one level per observation)."""


class FitTimeout(LmmError):
    """A fit ran past the configured time limit and was stopped."""


class BootstrapCancelled(LmmError):
    """A bootstrap was stopped by its ``progress`` callback (which returned ``False``).

    ``partial`` holds the replicates finished before the stop (a
    :class:`lmmcore.intervals.BootstrapResult`), so a caller can still show them.
    """

    def __init__(self, message: str, partial=None):
        super().__init__(message)
        self.partial = partial
