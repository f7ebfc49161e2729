"""Mask schedules gamma: r in [0, 1] -> the fraction of tokens still masked.

gamma(0) = 1 (everything masked), gamma(1) = 0 (nothing masked), decreasing in between.
Training draws r ~ U(0, 1) and masks ceil(gamma(r) * N) tokens; decoding with T iterations
keeps floor(gamma(t / T) * n0) of the n0 hole tokens masked after iteration t.

``FORMULAS`` is the one registry: a schedule is added by adding its formula, and
``SCHEDULES`` (the names the config accepts) follows. This module imports nothing from
labkit, so the config can check schedule names without importing the models.
"""

from __future__ import annotations

import math

import numpy as np
import torch

# name: formula of r, written once for NumPy and torch (``xp`` is the array module)
FORMULAS = {
    # BEGIN SOLUTION
    "linear": lambda r, xp: 1 - r,
    "cosine": lambda r, xp: xp.cos(r * math.pi / 2),
    "square": lambda r, xp: 1 - r ** 2,
    "cubic": lambda r, xp: 1 - r ** 3,
    "sqrt": lambda r, xp: 1 - xp.sqrt(r),
    # END SOLUTION
}
SCHEDULES = tuple(FORMULAS)


def gamma_func(mode: str = "cosine"):
    """The mask schedule ``mode`` as a callable of r: a float, a NumPy array or a torch tensor
    (a float in, a float out; an array or a tensor in, the same kind out)."""
    if mode not in FORMULAS:
        raise ValueError(f"unknown mask schedule {mode!r}; choose one of {', '.join(SCHEDULES)}")
    formula = FORMULAS[mode]

    def gamma(r):
        if isinstance(r, torch.Tensor):
            return formula(r, torch)
        value = formula(np.asarray(r, dtype=np.float64), np)
        return float(value) if np.ndim(value) == 0 else value

    gamma.__name__ = f"gamma_{mode}"
    gamma.__doc__ = f"The {mode!r} mask schedule."
    return gamma


__all__ = ["FORMULAS", "SCHEDULES", "gamma_func"]
