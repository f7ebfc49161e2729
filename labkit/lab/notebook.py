"""The first lines of every notebook, in one call.

    cfg, device, runs, out, cache = setup(globals())     # right after the parameters cell

``setup`` reads the notebook's parameters (the names of ``labkit.lab.params.RULES`` that the
namespace holds: ``profile``, ``seed``, ``device``, ``runs_root``, ...), checks them, and
returns what every notebook needs:

- ``cfg``: the profile's ``LabConfig`` with the notebook's ``seed`` (so ``-p seed 1`` changes
  the training, not only the figures);
- ``device``: the torch device (``device = None``: cuda, then mps, then cpu);
- ``runs``: the runs root (``runs_root``, else ``$LABKIT_RUNS``, else ``<repo>/runs``);
- ``out``: this profile's run folder, ``runs/<profile>``, where checkpoints are loaded from;
- ``cache``: where the toy cats are cached (``$LABKIT_DATA``, else ``<repo>/data``).

It seeds Python, NumPy and torch, and prints one line naming the profile, the device and the run
folder; on the ``smoke`` profile a second line says that the outputs are not meaningful.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import torch

from ..config import LabConfig, get_config
from .params import check_parameters
from .utils import data_root, get_device, project_root, run_dir, runs_root, seed_everything

SMOKE_WARNING = "test profile: outputs are not meaningful (seconds of training); use cpu or gpu for results"


class NotebookSetup(NamedTuple):
    cfg: LabConfig
    device: torch.device
    runs: Path
    out: Path
    cache: Path


def short_path(path: str | Path) -> str:
    """``path`` relative to the project root when it lies inside it (runs/cpu/...), else absolute."""
    path = Path(path).resolve()
    root = project_root().resolve()
    return os.path.relpath(path, root) if path.is_relative_to(root) else str(path)


def setup(namespace: Mapping[str, object], log=print) -> NotebookSetup:
    """Check the parameters in ``namespace`` (a notebook's ``globals()``), build the config,
    resolve the device and the folders, seed everything; see the module docstring."""
    parameters = check_parameters(namespace)
    seed = parameters.get("seed", 0)
    cfg = get_config(parameters.get("profile"), seed=seed)
    device = get_device(parameters.get("device"))
    seed_everything(seed)
    runs = runs_root(parameters.get("runs_root"))
    out = run_dir(cfg, runs)
    log(f"profile {cfg.profile} on {device}, seed {seed}; run folder {short_path(out)}")
    if cfg.profile == "smoke":
        log(SMOKE_WARNING)
    return NotebookSetup(cfg, device, runs, out, data_root())


__all__ = ["setup", "NotebookSetup", "short_path", "SMOKE_WARNING"]
