"""The one way the bench scripts write their JSON report (``artifacts/``)."""

from __future__ import annotations

import json
import time
from pathlib import Path


def write_report(path: Path, **fields) -> None:
    """Write ``fields`` with the time they were made as JSON to ``path`` and say where."""
    report = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **fields}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nwritten: {path}")
