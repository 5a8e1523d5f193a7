"""Streamlit-side helpers of the Pooling Explorer pages: state, data, charts, escaping.

Nothing here computes a statistic: numbers come from ``lmmcore`` (``lmmcore.teaching``
for the teaching extras); this package only wires them to widgets and figures.
"""
