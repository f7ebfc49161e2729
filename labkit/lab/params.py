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
from numbers import Integral
from pathlib import Path

import torch

from ..config import FIELD_RULES, check_sweet_spot, get_config


class ParameterError(ValueError):
    """A notebook parameter of the wrong type or out of range."""


def _integers(value, least: int) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) > 0
            and all(isinstance(item, Integral) and not isinstance(item, bool) and item >= least
                    for item in value))


def _path_or_none(value) -> bool:
    return value is None or isinstance(value, (str, Path))


def _families(value) -> bool:
    from ..data.holes import FAMILIES
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(v in FAMILIES for v in value)


def _device(value) -> bool:
    # A torch.device too: re-running the first cell after ``device = get_device(device)``.
    return value is None or isinstance(value, torch.device) or (
        isinstance(value, str) and value.split(":")[0] in ("auto", "cpu", "cuda", "mps"))


def _field(field: str, option: str, none: bool = False) -> tuple:
    """The rule of a parameter that sets the config field ``field``: the config's verdict
    (``labkit.config.FIELD_RULES``), with None allowed when the notebook reads None as
    "the profile's value"."""
    expected, test = FIELD_RULES[field]
    if none:
        return f"None or {expected}", option, lambda v: v is None or test(v)
    return expected, option, test


def _fields(field: str, option: str) -> tuple:
    """A list parameter, each item a value of the config field ``field``."""
    expected, test = FIELD_RULES[field]
    return (f"a non-empty list, each item {expected}", option,
            lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(map(test, v)))


# name: (what is expected, the papermill option that passes a right value, test)
RULES = {
    "profile": _field("profile", "-p profile cpu", none=True),
    "seed": _field("seed", "-p seed 0"),
    "device": ("None or a device name (cpu, cuda, cuda:1, mps, auto)", "-p device cuda", _device),
    "data_root": ("None or a folder path (a string)", "-p data_root /data/cats", _path_or_none),
    "runs_root": ("None or a folder path (a string)", "-p runs_root /scratch/runs", _path_or_none),
    "inception_weights": ("None or a file path (a string)", "-p inception_weights pt_inception.pth",
                          _path_or_none),
    "loss": _field("loss", "-p loss masked"),
    "label_smoothing": _field("label_smoothing", "-p label_smoothing 0.1"),
    "gamma": _field("gamma_type", "-p gamma cosine"),
    "total_iter": _field("total_iter", "-p total_iter 8"),
    "sweet_spot": _field("sweet_spot", "-p sweet_spot 6"),
    "choice_temperature": _field("choice_temperature", "-p choice_temperature 4.5"),
    "n_images": ("None or an integer >= 1", "-p n_images 256",
                 lambda v: v is None or _integers([v], 1)),
    # lists need papermill's YAML option: -p would pass "[0, 1, 2]" as a string
    "image_indices": ("a list of integers >= 0", "-y 'image_indices: [0, 1, 2]'",
                      lambda v: _integers(v, 0)),
    "schedules": _fields("gamma_type", "-y 'schedules: [linear, cosine]'"),
    "total_iters": _fields("total_iter", "-y 'total_iters: [2, 4, 8]'"),
    "replay_T": _field("total_iter", "-p replay_T 19"),
    "replay_t": _field("total_iter", "-p replay_t 2"),
    "n_boot": ("an integer >= 2", "-p n_boot 100", lambda v: _integers([v], 2)),
    "early_fraction": ("a number in (0, 1)", "-p early_fraction 0.1",
                       lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1),
    "n_seeds": ("an integer >= 2 (one seed per loss gives no noise estimate)", "-p n_seeds 3",
                lambda v: _integers([v], 2)),
    "steps": ("None or an integer >= 1", "-p steps 80", lambda v: v is None or _integers([v], 1)),
    "guidance": _field("guidance", "-p guidance 2"),
    "guidances": _fields("guidance", "-y 'guidances: [0, 1, 2, 4]'"),
    "request": ("a dict {attribute: value name}, e.g. {fur_colour: ginger}",
                "-y 'request: {fur_colour: ginger, pattern: tabby}'",
                lambda v: isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items())),
    "n_families": ("an integer >= 2", "-p n_families 128", lambda v: _integers([v], 2)),
    "families": ("a non-empty list of hole families (labkit.data.holes.FAMILIES)",
                 "-y 'families: [strokes, eyes, mouth]'", _families),
}


def check_parameters(namespace: Mapping[str, object] = (), **values) -> dict:
    """Check every parameter of ``RULES`` found in ``namespace`` (e.g. ``globals()``) or
    passed by name; returns the checked {name: value}. Names without a rule are ignored.

    The verdicts on config values are the config's own; this adds how to pass the value
    right. Raises ParameterError naming each wrong parameter, its value and type, what it
    should be, and the command line that passes it right.
    """
    found = {name: value for name, value in {**dict(namespace), **values}.items() if name in RULES}
    problems = []
    for name, value in found.items():
        expected, option, test = RULES[name]
        if not test(value):
            problems.append(f"{name} = {value!r} ({type(value).__name__}): expected {expected}, "
                            f"e.g. papermill ... {option}")
    if not problems and found.get("replay_T") is not None and found.get("replay_t") is not None \
            and found["replay_t"] > found["replay_T"]:
        problems.append(f"replay_t = {found['replay_t']} is after the last iteration replay_T = "
                        f"{found['replay_T']}: choose replay_t in 1..{found['replay_T']}, e.g. "
                        f"papermill ... {RULES['replay_t'][1]}")
    if not problems and found.get("total_iter") is not None:
        try:
            check_sweet_spot(found.get("sweet_spot"), found["total_iter"])
        except ValueError as error:
            problems.append(f"{error}, e.g. papermill ... {RULES['sweet_spot'][1]}")
    if not problems and found.get("image_indices") and found.get("data_root") is None:
        # the toy cats' test split: its size is the profile's (another dataset's is known
        # only once loaded, and ImageSet names a wrong index then)
        cfg = get_config(found.get("profile"))
        if max(found["image_indices"]) >= cfg.n_test:
            problems.append(f"image_indices = {list(found['image_indices'])}: the {cfg.profile} "
                            f"profile's test split has {cfg.n_test} images: choose indices in "
                            f"0..{cfg.n_test - 1}, e.g. papermill ... {RULES['image_indices'][1]}")
    if problems:
        raise ParameterError("wrong notebook parameter" + ("s" if len(problems) > 1 else "") + ":\n  "
                             + "\n  ".join(problems)
                             + "\n(papermill -p reads True, False, None, integers and decimals and "
                               "keeps anything else as a string; -y and -f read YAML, for lists; "
                               "python -m labkit notebooks -p reads JSON)")
    return found


__all__ = ["check_parameters", "ParameterError", "RULES"]
