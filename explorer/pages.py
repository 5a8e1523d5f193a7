"""The app's pages: one line each, the only list of them.

``app.py`` builds the navigation, the access gate and the shareable link's page from
:data:`PAGES`; the tests walk every page from it.  A page's address is its ``name``
(``/model``), its script is ``app_pages/<name>.py`` and its widget keys start with its
``namespace`` (``"model."``); the keys themselves are constants in ``explorer.state``.

Adding a page
-------------
1. Write ``app_pages/<name>.py``: one script that reads its widgets, calls ``lmmcore``
   and draws (see the other pages).
2. Add one :class:`PageEntry` line to :data:`PAGES`, in the order of the sidebar.
3. Give each widget a key constant in ``explorer.state`` under the page's namespace
   (``SIM_SEED = "sim.seed"``); values that must survive a switch to another page go in
   ``state.PERSISTENT``, their defaults in ``state.init``.  ``tests/test_app_registry.py``
   refuses a key literal in a page and a key outside every registered namespace.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PageEntry:
    """One page of the app.

    Attributes
    ----------
    name : str
        The page's URL path (``/dataset``) and file name (``app_pages/dataset.py``).
    title, icon : str
        What the sidebar shows (``icon``: a Material Symbols name, ``:material/...:``).
    namespace : str
        Prefix of the page's session-state keys, without the dot.
    """

    name: str
    title: str
    icon: str
    namespace: str

    @property
    def script(self) -> str:
        """The page's script, relative to the repository root (as ``st.Page`` takes it)."""
        return f"app_pages/{self.name}.py"


PAGES: tuple[PageEntry, ...] = (
    PageEntry("dataset", "Dataset", ":material/table_view:", "data"),
    PageEntry("model", "Model builder", ":material/functions:", "model"),
    PageEntry("pooling", "Pooling comparison", ":material/stacked_line_chart:", "pool"),
    PageEntry("shrinkage", "Shrinkage", ":material/compress:", "shrink"),
    PageEntry("simulate", "Simulate", ":material/casino:", "simulate"),
    PageEntry("fit", "How the fit works", ":material/tune:", "fit"),
)

# The root URL shows the first page.  Streamlit serves its default page at the root only,
# and "/dataset" must also work for shared links, so app.py registers the first page twice:
# hidden at this path (the default) and visible at its own name.
HOME = "home"

# Key namespaces that belong to no one page: the app's sidebar and gate, and the model
# page's formula builder (cleared as a whole when the formula is typed).
SHARED_NAMESPACES = ("app", "build")


def names() -> list[str]:
    """Every page's name, in the order of the sidebar."""
    return [p.name for p in PAGES]


def by_name(name: str) -> PageEntry:
    """The page registered under ``name``; KeyError for an unknown page."""
    for p in PAGES:
        if p.name == name:
            return p
    raise KeyError(name)
