"""Pooling Explorer: the entry point. Navigation, sidebar, access gate and shareable link.

Run with ``streamlit run app.py``.  Each page is one file in ``app_pages/`` (not ``pages/``:
Streamlit treats a ``pages/`` folder as the old multipage layout and would run a deep-linked
page without this script on a fresh server), registered by one line in
``explorer.pages.PAGES`` (how to add a page: that module's docstring).  This script
initialises the session state (``explorer.state``), draws the sidebar every run, and runs
the page the URL names.
"""

from __future__ import annotations

import logging

import streamlit as st

from explorer import data as D
from explorer import state as S
from explorer.pages import HOME, PAGES
from explorer.escape import md
from explorer.settings import load_settings
# Imported here, not only by the pages, so they are loaded before the heap is frozen.
from explorer import charts as _charts, fitting as _fitting  # noqa: F401
from explorer.runtime import freeze_new_modules

log = logging.getLogger("pooling_explorer")


def _navigation_pages() -> list:
    """``st.Page`` objects for the registry's pages, the first one also hidden at the root
    (Streamlit serves its default page only there, and "/dataset" must work for links)."""
    first = PAGES[0]
    home = st.Page(first.script, title=first.title, icon=first.icon, url_path=HOME, default=True,
                   visibility="hidden")
    return [home] + [st.Page(p.script, title=p.title, icon=p.icon, url_path=p.name) for p in PAGES]


def _page_config() -> None:
    # On a 1280x720 projector the sidebar would take a quarter of the screen: in lecture mode
    # it starts collapsed (its arrow still opens it).  The same value every run, so a rerun
    # does not fold away a sidebar the lecturer has opened.
    lecture = bool(st.session_state.get(S.APP_LECTURE))
    st.set_page_config(page_title="Pooling Explorer", page_icon="📊", layout="wide",
                       initial_sidebar_state="collapsed" if lecture else "auto")


def _base_css() -> None:
    # Less empty space above the title: on a 1280x720 projector every line counts.
    st.html("<style>.stMainBlockContainer { padding-top: 2.2rem !important; }</style>")


def _lecture_css() -> None:
    # Bigger base text for a projector; charts get their own sizes from explorer.charts.
    st.html("""<style>
      .stMainBlockContainer p, .stMainBlockContainer li, .stMainBlockContainer label,
      .stMainBlockContainer td, .stMainBlockContainer th { font-size: 1.3rem !important; }
      .stMainBlockContainer code, .stMainBlockContainer pre { font-size: 1.3rem !important; }
      .stMainBlockContainer [data-testid="stCaptionContainer"] p { font-size: 1.2rem !important; }
      .stMainBlockContainer [data-testid="stMetricValue"] p { font-size: 2.8rem !important; }
      .stMainBlockContainer .katex-display .katex { font-size: 1.75em !important; }
      .stMainBlockContainer [data-testid="stTable"] td, .stMainBlockContainer [data-testid="stTable"] th
        { font-size: 1.25rem !important; padding: 0.3rem 0.5rem !important; }
      /* the large tables carry their cells as text (explorer.tables): right-aligned, as R
         prints a data frame */
      .stMainBlockContainer [data-testid="stTable"] td,
      .stMainBlockContainer [data-testid="stTable"] thead th { text-align: right !important; }
      section[data-testid="stSidebar"] p, section[data-testid="stSidebar"] label,
      section[data-testid="stSidebar"] span, section[data-testid="stSidebar"] li
        { font-size: 1.2rem !important; }
      section[data-testid="stSidebar"] input { font-size: 1.1rem !important; }
      section[data-testid="stSidebar"] code, section[data-testid="stSidebar"] pre { font-size: 1rem !important; }
      .stMainBlockContainer h1 { font-size: 3rem !important; padding: 1rem 0 0.25rem 0 !important; }
      .stMainBlockContainer h2 { font-size: 2.3rem !important; }
      .stMainBlockContainer h3 { font-size: 1.8rem !important; }
      .stMainBlockContainer input, .stMainBlockContainer textarea,
      .stMainBlockContainer [data-baseweb="select"] div { font-size: 1.25rem !important; }
    </style>""")


def _gate(settings) -> bool:
    """The class's access code, if the course set one; True once entered."""
    if not settings.access_required or st.session_state.get(S.APP_ACCESS_OK):
        return True

    def locked():
        st.title("Pooling Explorer")
        st.write("This course server asks for the access code your lecturer gave you.")
        code = st.text_input("Access code", type="password", key=S.APP_ACCESS_INPUT)
        if code:
            if settings.check_access_code(code):
                st.session_state[S.APP_ACCESS_OK] = True
                st.rerun()
            st.error("That is not the access code.")

    # The lock answers at every page's address, so a shared link opens its page once unlocked.
    paths = [HOME] + [p.name for p in PAGES]
    st.navigation([st.Page(locked, title="Access", url_path=p, default=(p == HOME)) for p in paths],
                  position="hidden").run()
    return False


def _sidebar(page) -> None:
    with st.sidebar:
        # The labels are frozen into the format function: it may be called outside a run.
        labels = {k: D.label(k) for k in D.options()}
        st.selectbox("Dataset", list(labels), key=S.DATA_KEY, format_func=labels.__getitem__,
                     on_change=D.on_dataset_change)
        st.toggle("Lecture mode (projector)", key=S.APP_LECTURE)
        st.radio("Chart download (camera icon)", ["png", "svg"], key=S.APP_IMAGE_FORMAT,
                 horizontal=True, format_func=str.upper)
        query = S.write_query()
        if S.share_query().get("dataset"):
            path = page.url_path if page.url_path not in ("", HOME) else PAGES[0].name
            base = (st.context.url or "").rstrip("/")
            # The browser's URL may end in a page's path (or /home, which Streamlit answers
            # with the first page): the link is built on the app's own address.
            head, _, tail = base.rpartition("/")
            if tail in [HOME] + [p.name for p in PAGES]:
                base = head
            st.caption("Link to this view (page, dataset, formula, lecture mode):")
            st.code(f"{base}/{path}?{query}", language=None, wrap_lines=True)
        else:
            st.caption("Your own file stays in this browser session; a link cannot share it.")


def _lost_upload() -> None:
    """Say plainly that a file this view was built on is gone (see ``S.DATA_LOST``)."""
    name = st.session_state.get(S.DATA_LOST)
    if name:
        st.warning(f"Your file **{md(name)}** has to be uploaded again (Dataset page). Uploaded "
                   "files are kept only in your browser session's memory, never stored on the "
                   "server, and this session is new (the server was restarted, or the link was "
                   "opened in another browser). Until then the built-in data is shown.",
                   icon=":material/upload_file:")


def main() -> None:
    freeze_new_modules()  # the collection after every run then skips the imported libraries
    try:
        settings = load_settings()
    except ValueError as exc:  # a bad POOLING_* variable: the server admin must fix it
        _page_config()
        st.error(md(str(exc)))
        st.stop()
    S.init()
    _page_config()
    if not _gate(settings):
        return
    page = st.navigation(_navigation_pages())
    _sidebar(page)
    _base_css()
    if st.session_state.get(S.APP_LECTURE):
        _lecture_css()
    _lost_upload()
    try:
        page.run()
    except Exception:  # pages guard their own steps; this is the last net, never a traceback
        log.exception("page %s failed", page.title)
        st.error("Something went wrong on this page. Pick another dataset or model, or reload.")
    freeze_new_modules()  # what the page imported on first use (statsmodels, plotly's figure classes)


# Streamlit runs this script as ``__main__``.  A worker process (lmmcore.worker) re-imports
# the main script as ``__mp_main__`` (multiprocessing's spawn/forkserver preparation): there
# it must only define things, not run the app (that took seconds per worker, in bare mode).
if __name__ == "__main__":
    main()
