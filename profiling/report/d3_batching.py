"""The D3 batching section of the report. Until its experiment exists, the section is "not yet measured"."""
from __future__ import annotations

from pathlib import Path

EXPERIMENT = "d3_batching"
RECORD_TEMPLATE = None


def view(reports: Path, figures: Path) -> dict | None:
    """Everything the section shows, or None when its analysis outputs are not in `reports`."""
    return None
