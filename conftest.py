"""Tests and notebooks under pytest run the seconds-long `smoke` profile unless told otherwise.

Set here, before any notebook kernel starts, so `pytest --nbval` from a bare shell does not
train the `cpu` profile for half an hour. `LABKIT_PROFILE=cpu pytest ...` still overrides it.
Kernels started without a browser (nbval, papermill) draw progress bars as plain text lines
(`labkit.lab.progress`). Only the numbered series `notebooks/NN_*.ipynb` is collected: an executed
copy left in `notebooks/` (papermill's `out.ipynb`) is not a test.
"""

import os
import re
from pathlib import Path

os.environ.setdefault("LABKIT_PROFILE", "smoke")
os.environ.setdefault("LABKIT_PROGRESS", "text")

NOTEBOOKS = Path(__file__).resolve().parent / "notebooks"
SERIES_NAME = re.compile(r"\d\d_\w+\.ipynb")


def pytest_ignore_collect(collection_path, config):
    if collection_path.suffix == ".ipynb":
        in_series = collection_path.parent == NOTEBOOKS and SERIES_NAME.fullmatch(collection_path.name)
        return None if in_series else True
    return None
