"""Writing results so that a failure never leaves half-written files or clobbers finished ones."""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged(*paths):
    """Yield temporary paths next to `paths`; move them into place only if the block finishes without error.

    If the block raises, the temporary files are deleted and the files already at `paths` stay as they were.
    """
    finals = [Path(p) for p in paths]
    temps = [p.with_name(f".{p.name}.partial") for p in finals]
    for path in finals:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield temps
        missing = [str(final) for final, temp in zip(finals, temps) if not temp.exists()]
        if missing:
            raise RuntimeError(f"the step did not write {', '.join(missing)}")
        for final, temp in zip(finals, temps):
            os.replace(temp, final)
    finally:
        for temp in temps:
            if temp.exists():
                temp.unlink()


def write_json(path, data) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True, default=str)
        f.write("\n")


def read_json(path):
    with open(path) as f:
        return json.load(f)


def read_data_files(directory, names) -> dict | None:
    """Read the named files of an experiment's data directory: `.json` as JSON, `.csv` as a pandas DataFrame.

    Returns {name: content}, or None when any of them is missing (the phase has not been analysed there)."""
    import pandas as pd

    directory = Path(directory)
    if not all((directory / name).exists() for name in names):
        return None
    return {name: read_json(directory / name) if name.endswith(".json") else pd.read_csv(directory / name)
            for name in names}
