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

# Each formula takes r (a NumPy array or a torch tensor) and ``xp``, the array module
# (``numpy`` or ``torch``), so it is written once for both.

def linear(r, xp):
    """gamma(r) = 1 - r"""
    # BEGIN SOLUTION TODO2 step1-2
    # HINT: linear schedule: gamma(r) = 1 - r, elementwise on r (same shape out)
    return 1 - r
    # END SOLUTION


def cosine(r, xp):
    """gamma(r) = cos(pi r / 2)"""
    # BEGIN SOLUTION TODO2 step1-2
    # HINT: cosine schedule: gamma(r) = cos(pi * r / 2), with xp.cos (xp is numpy or torch)
    return xp.cos(r * math.pi / 2)
    # END SOLUTION


def square(r, xp):
    """gamma(r) = 1 - r^2"""
    # BEGIN SOLUTION TODO2 step1-2
    # HINT: square schedule: gamma(r) = 1 - r^2 (r squared, elementwise)
    return 1 - r ** 2
    # END SOLUTION


def cubic(r, xp):
    """gamma(r) = 1 - r^3"""
    # BEGIN SOLUTION TODO2 step1-2
    # HINT: cubic schedule: gamma(r) = 1 - r^3
    return 1 - r ** 3
    # END SOLUTION


def sqrt(r, xp):
    """gamma(r) = 1 - sqrt(r)"""
    # BEGIN SOLUTION TODO2 step1-2
    # HINT: sqrt schedule: gamma(r) = 1 - sqrt(r), with xp.sqrt
    return 1 - xp.sqrt(r)
    # END SOLUTION


# name -> formula of r
FORMULAS = {"linear": linear, "cosine": cosine, "square": square, "cubic": cubic, "sqrt": sqrt}
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
