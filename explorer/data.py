"""The dataset a student is working on: built-in or uploaded, with their column choices.

:func:`active` returns it as an :class:`ActiveData` (the table with the student's column
types applied, plus the arguments lmmcore's fitting functions take).  Uploads are read
by ``lmmcore.load_table`` inside the uploader's callback and kept in this session's
state only: never on disk, never in a shared cache.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from dataclasses import dataclass, field

import pandas as pd
import streamlit as st

import lmmcore
from lmmcore import teaching
from explorer import state as S
from explorer.datasets import CATALOGUE, DEFAULT_KEY, read_bytes
from explorer.settings import load_settings

log = logging.getLogger(__name__)


# Up to this many rows a session keeps its typed table between runs (see active()).
TYPED_MEMO_MAX_ROWS = 50_000

# A student's own tables: the sidebar picker's keys for them (beside the CATALOGUE keys)
# and the word the picker puts before the file name.  One slot each: a new upload replaces
# the last one.
UPLOAD = "upload"      # the file uploaded on the dataset page
RESHAPED = "long"      # the wide-to-long reshape of the current table
USER_SLOTS = {UPLOAD: "your file", RESHAPED: "reshaped"}


@st.cache_data(max_entries=16, show_spinner=False)
def load_builtin(key: str) -> pd.DataFrame:
    """A built-in dataset read through lmmcore's loader (shared: the files are public)."""
    d = CATALOGUE[key]
    return lmmcore.load_table(read_bytes(key), d.file)


def _typed(df: pd.DataFrame, categorical, overrides) -> tuple[dict, pd.DataFrame]:
    """(column types, the table with them applied); the student's ``overrides`` win."""
    types = teaching.column_types(df, categorical, overrides)
    try:
        typed = teaching.apply_types(df, types)
    except lmmcore.LmmError:
        # The switch callback refuses impossible types; this only guards stale state.
        types = teaching.column_types(df, categorical)
        typed = teaching.apply_types(df, types)
    return types, typed


@st.cache_data(max_entries=64, show_spinner=False)
def _typed_builtin(key: str, overrides: tuple) -> tuple[dict, pd.DataFrame]:
    """:func:`_typed` of a built-in dataset, shared: a lecture hall opening a link types
    the table once, not once per session (``overrides``: sorted (column, type) pairs)."""
    return _typed(load_builtin(key), CATALOGUE[key].categorical, dict(overrides))


@dataclass(frozen=True)
class ActiveData:
    """The current table and how its columns are treated.

    Attributes
    ----------
    key : str
        CATALOGUE key, or one of :data:`USER_SLOTS` for the student's own table.
    label, file : str
        Display name and file name (user text for uploads: escape before rendering).
    df : DataFrame
        The table with the student's types applied (categorical columns as text).
    types : dict
        Column -> ``"numeric"`` / ``"categorical"``.
    reference : dict
        Column -> chosen reference level.
    raw : DataFrame
        The table as read, before the student's types (what a type switch is tried on,
        and what "reproduce this" reads the file as).
    digest : str
        Identifies ``df`` (content and column types) and ``reference``: the caches key
        fits and figures on this short string instead of hashing the table every run.
    """

    key: str
    label: str
    file: str
    df: pd.DataFrame = field(repr=False)
    types: dict
    reference: dict
    digest: str
    raw: pd.DataFrame = field(repr=False)

    @property
    def is_own(self) -> bool:
        """The student's own table (an upload or a reshape), not a built-in dataset."""
        return self.key not in CATALOGUE

    @property
    def categorical(self) -> tuple:
        return tuple(c for c, t in self.types.items() if t == "categorical")

    @property
    def numeric(self) -> tuple:
        return tuple(c for c, t in self.types.items() if t == "numeric")

    def fit_kwargs(self) -> dict:
        """Keyword arguments for ``lmmcore.lmer`` / ``lmmcore.lm``."""
        ref = {c: v for c, v in self.reference.items() if c in self.types and self.types[c] == "categorical"}
        return {"categorical": list(self.categorical), "numeric": list(self.numeric),
                "reference_levels": ref or None}


def content_digest(df: pd.DataFrame) -> str:
    """A digest of a table's content: every row, the column names and dtypes.

    Computed once when a student's table is stored, not on every run.  Unlike the
    hashing ``st.cache_data`` does on a DataFrame argument, it reads every row (Streamlit
    samples tables past 100,000 rows, so two large tables differing elsewhere collide).
    """
    h = hashlib.sha256()
    h.update(repr([(str(c), str(t)) for c, t in df.dtypes.items()]).encode("utf-8"))
    try:
        h.update(pd.util.hash_pandas_object(df, index=True).to_numpy().tobytes())
    except (TypeError, ValueError):  # unhashable cells (mixed objects): the pickled bytes
        h.update(pickle.dumps(df, protocol=pickle.HIGHEST_PROTOCOL))
    return h.hexdigest()[:32]


def _base_digest(key: str) -> str:
    if key in CATALOGUE:
        return f"builtin:{key}"  # the files in data/ do not change while the server runs
    user = st.session_state[S.DATA_USER][key]
    if not user.get("digest"):
        user["digest"] = content_digest(user["df"])
    return user["digest"]


def _source(key: str) -> tuple[pd.DataFrame, str, str, tuple]:
    """(table as read, name, file name, categorical columns) of a built-in or own table."""
    if key in CATALOGUE:
        d = CATALOGUE[key]
        return load_builtin(key), d.title, d.file, d.categorical
    user = st.session_state[S.DATA_USER][key]
    return user["df"], user["label"], user["file"], ()


def options() -> list:
    """Keys the sidebar picker offers: the catalogue, then this session's own tables."""
    return list(CATALOGUE) + [k for k in USER_SLOTS if k in st.session_state.get(S.DATA_USER, {})]


def label(key: str) -> str:
    if key in CATALOGUE:
        return CATALOGUE[key].title
    user = st.session_state.get(S.DATA_USER, {}).get(key)
    return f"{USER_SLOTS[key]}: {user['label']}" if user else key


def active() -> ActiveData:
    """The dataset picked in the sidebar, with the student's types and reference levels."""
    key = st.session_state[S.DATA_KEY]
    if key not in options():
        key = DEFAULT_KEY
    df, name, file, categorical = _source(key)
    overrides = st.session_state[S.DATA_TYPES].get(key)
    base = _base_digest(key)
    # A built-in table is typed once for every session (shared cache; each run gets its
    # copy).  A student's small table is kept from the last run while the table and the
    # types stay the same (this session only): applying the types copies the table.  A
    # large one is typed again each run (~25 ms for 200,000 rows) rather than held twice.
    sig = (key, base, tuple(sorted((overrides or {}).items())))
    memo = st.session_state.get(S.DATA_TYPED)
    if key in CATALOGUE:
        types, typed = _typed_builtin(key, sig[2])
    elif memo is not None and memo[0] == sig:
        types, typed = memo[1], memo[2]
    else:
        types, typed = _typed(df, categorical, overrides)
        st.session_state[S.DATA_TYPED] = (sig, types, typed) if len(df) <= TYPED_MEMO_MAX_ROWS else None
    types = dict(types)
    reference = dict(st.session_state[S.DATA_REFERENCE].get(key, {}))
    digest = hashlib.sha256(repr((base, sorted(types.items()), sorted(reference.items()))).encode("utf-8"))
    return ActiveData(key, name, file, typed, types, reference, digest.hexdigest()[:32], df)


def store_user_table(slot: str, df: pd.DataFrame, name: str, file: str) -> None:
    """Keep a student's table in this session, in ``slot`` (one of :data:`USER_SLOTS`),
    and make it the current dataset."""
    st.session_state[S.DATA_USER] = {**st.session_state[S.DATA_USER],
                                      slot: {"df": df, "label": name, "file": file, "digest": content_digest(df)}}
    st.session_state[S.DATA_TYPES].pop(slot, None)
    st.session_state[S.DATA_REFERENCE].pop(slot, None)
    st.session_state[S.DATA_KEY] = slot
    st.session_state[S.DATA_LOST] = None
    types = teaching.column_types(df)
    S.reset_for_dataset(slot, teaching.guess_roles(df, types))


def on_upload() -> None:
    """File-uploader callback: read the file with lmmcore's loader, within the limits."""
    ss = st.session_state
    uploaded = ss.get(S.DATA_UPLOADER)
    ss[S.DATA_UPLOAD_ERROR] = None
    if uploaded is None:
        return
    settings = load_settings()
    try:
        data = uploaded.getvalue()
        df = lmmcore.load_table(data, uploaded.name, max_bytes=settings.max_upload_bytes,
                                max_rows=settings.max_rows, max_columns=settings.max_columns)
    except lmmcore.LmmError as exc:
        ss[S.DATA_UPLOAD_ERROR] = str(exc)
        return
    except Exception:  # a loader bug must not become a traceback on the page
        log.exception("reading an uploaded file failed")
        ss[S.DATA_UPLOAD_ERROR] = "This file could not be read. Save it as CSV (UTF-8) and try again."
        return
    store_user_table(UPLOAD, df, uploaded.name, uploaded.name)


def on_dataset_change() -> None:
    """Sidebar-picker callback: the new dataset's suggested formula and pooling columns."""
    key = st.session_state[S.DATA_KEY]
    st.session_state[S.DATA_LOST] = None  # the student has moved on from the lost file
    if key in CATALOGUE:
        S.reset_for_dataset(key)
    else:
        user = st.session_state[S.DATA_USER].get(key)
        if user is not None:
            S.reset_for_dataset(key, teaching.guess_roles(user["df"], teaching.column_types(user["df"])))
