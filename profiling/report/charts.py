"""Shared chart helpers (matplotlib, Agg backend). Each phase's charts live in its report module
(profiling/report/<phase>.py) and save through `save`: `<name>.png` and `<name>.svg` under the figures directory."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402,F401  (re-exported for the phase modules)

STAGE_COLOURS = {"tokenize": "#8c564b", "prefill": "#d62728", "decode_step": "#1f77b4", "detokenize": "#9467bd"}


def save(fig, figures: Path, name: str) -> str:
    """Save `fig` as figures/<name>.png and .svg, close it, and return the PNG's file name."""
    figures.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    for suffix in ("png", "svg"):
        fig.savefig(figures / f"{name}.{suffix}", dpi=110)
    plt.close(fig)
    return f"{name}.png"
