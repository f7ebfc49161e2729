"""Check the notebooks' parameters (papermill ``-p``) before anything runs on them.

    check_parameters(globals())     # first line after the imports of each notebook

papermill reads ``-p total_iter 8`` as the int 8, but ``-r total_iter 8`` or a YAML file
can hand the notebook the string "8", and ``-p gamma 8`` gives an int where a schedule name
belongs. Without a check, such a value fails many cells later with an error about tensors.
``check_parameters`` looks at every parameter name it knows in the namespace it is given,
and raises one ``ParameterError`` that lists each wrong value with what was expected and
how to pass it.
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Integral, Real
from pathlib import Path

import torch

from .config import PROFILES
from .maskgit import SCHEDULES


class ParameterError(ValueError):
    """A notebook parameter of the wrong type or out of range."""


def _integer(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _path_or_none(value) -> bool:
    return value is None or isinstance(value, (str, Path))


def _schedule(value) -> bool:
    return isinstance(value, str) and value in SCHEDULES


def _device(value) -> bool:
    # A torch.device too: re-running the first cell after ``device = get_device(device)``.
    return value is None or isinstance(value, torch.device) or (
        isinstance(value, str) and value.split(":")[0] in ("auto", "cpu", "cuda", "mps"))


def _integers(value, least: int) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) > 0
            and all(_integer(item) and item >= least for item in value))


# name: (what is expected, the papermill option that passes a right value, test)
RULES = {
    "profile": (f"None or one of {', '.join(PROFILES)}", "-p profile cpu",
                lambda v: v is None or v in PROFILES),
    "seed": ("an integer", "-p seed 0", _integer),
    "device": ("None or a device name (cpu, cuda, cuda:1, mps, auto)", "-p device cuda", _device),
    "data_root": ("None or a folder path (a string)", "-p data_root /data/cats", _path_or_none),
    "runs_root": ("None or a folder path (a string)", "-p runs_root /scratch/runs", _path_or_none),
    "inception_weights": ("None or a file path (a string)", "-p inception_weights pt_inception.pth",
                          _path_or_none),
    "loss": ("'masked' or 'full'", "-p loss masked", lambda v: v in ("masked", "full")),
    "label_smoothing": ("a number in [0, 1)", "-p label_smoothing 0.1",
                        lambda v: _number(v) and 0 <= v < 1),
    "gamma": (f"a schedule name: {', '.join(SCHEDULES)}", "-p gamma cosine", _schedule),
    "total_iter": ("an integer >= 1", "-p total_iter 8", lambda v: _integer(v) and v >= 1),
    "sweet_spot": ("None or an integer in 1..total_iter", "-p sweet_spot 6",
                   lambda v: v is None or (_integer(v) and v >= 1)),
    "choice_temperature": ("a number >= 0", "-p choice_temperature 4.5",
                           lambda v: _number(v) and v >= 0),
    "n_images": ("None or an integer >= 1", "-p n_images 256",
                 lambda v: v is None or (_integer(v) and v >= 1)),
    # lists need papermill's YAML option: -p would pass "[0, 1, 2]" as a string
    "image_indices": ("a list of integers >= 0", "-y 'image_indices: [0, 1, 2]'",
                      lambda v: _integers(v, 0)),
    "schedules": (f"a list of schedule names from {', '.join(SCHEDULES)}",
                  "-y 'schedules: [linear, cosine]'",
                  lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(map(_schedule, v))),
    "total_iters": ("a list of integers >= 1", "-y 'total_iters: [2, 4, 8]'",
                    lambda v: _integers(v, 1)),
}


def check_parameters(namespace: Mapping[str, object] = (), **values) -> dict:
    """Check every parameter of ``RULES`` found in ``namespace`` (e.g. ``globals()``) or
    passed by name; returns the checked {name: value}. Names without a rule are ignored.

    Raises ParameterError naming each wrong parameter, its value and type, what it should
    be, and the command line that passes it right.
    """
    found = {name: value for name, value in {**dict(namespace), **values}.items() if name in RULES}
    problems = []
    for name, value in found.items():
        expected, option, test = RULES[name]
        if not test(value):
            problems.append(f"{name} = {value!r} ({type(value).__name__}): expected {expected}, "
                            f"e.g. papermill ... {option}")
    total_iter, sweet_spot = found.get("total_iter"), found.get("sweet_spot")
    if not problems and _integer(total_iter) and _integer(sweet_spot) and sweet_spot > total_iter:
        problems.append(f"sweet_spot = {sweet_spot} is after the last iteration total_iter = "
                        f"{total_iter}: choose sweet_spot in 1..{total_iter}, or None for all")
    if problems:
        raise ParameterError("wrong notebook parameter" + ("s" if len(problems) > 1 else "") + ":\n  "
                             + "\n  ".join(problems)
                             + "\n(papermill -p reads True, False, None, integers and decimals and "
                               "keeps anything else as a string; -y and -f read YAML, for lists; "
                               "python -m labkit.notebook_runner -p reads JSON)")
    return found


__all__ = ["check_parameters", "ParameterError", "RULES"]
