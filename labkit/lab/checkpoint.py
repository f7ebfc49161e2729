"""The one checkpoint format: a safetensors file, written atomically.

A checkpoint holds tensors only (model weights, optimizer moments, RNG states) plus a
JSON header (config, step, metrics...). Loading never unpickles anything, so a checkpoint
from a stranger cannot run code. Writing goes to a temporary file that is renamed over
the old one, so an interrupted save never leaves a half-written checkpoint behind.

Layout of the tensor names::

    model.<name>.<param>          state_dict of each module passed as ``models={name: module}``
    optim.<param_index>.<key>     optimizer state (AdamW: step, exp_avg, exp_avg_sq)
    rng.<name>                    generator states (``torch.Generator.get_state()``)
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from ..config import ARCH_FIELDS, LabConfig
from .utils import atomic_path

FORMAT = "labkit-checkpoint-1"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: corrupt, foreign, or from another config."""


def _corrupt(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"{path} is not a usable labkit checkpoint ({what}). Delete it and "
                           "train again, or pass the right file; an interrupted save never "
                           "writes this file in place.")


def _whole_number(text: str) -> int | None:
    """``text`` as a step or an index (ASCII digits, at most 18 of them), else None: ``int``
    would take "٣" or fail on 5,000 digits with a ValueError of its own."""
    return int(text) if re.fullmatch(r"[0-9]{1,18}", text) else None


def _check_finite(path: Path, tensors: dict) -> None:
    for key, value in tensors.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            kind = "NaN" if torch.isnan(value).any() else "inf"
            raise CheckpointError(
                f"{path}: {key} holds {kind}; training diverged before this checkpoint was "
                "written. Delete it and train again (lower the learning rate or raise "
                "warmup_steps), or load an earlier checkpoint.")


@dataclass
class Checkpoint:
    path: Path
    part: str
    config: LabConfig
    step: int
    metrics: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    tensors: dict = field(default_factory=dict, repr=False)
    optim_meta: dict | None = field(default=None, repr=False)

    def state_dict(self, name: str) -> dict:
        """The weights of module ``name``; refused when any of them is NaN or inf."""
        prefix = f"model.{name}."
        state = {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}
        if not state:
            raise CheckpointError(f"{self.path} holds no weights for {name!r}")
        _check_finite(self.path, {prefix + k: v for k, v in state.items()})
        return state

    def load_model(self, name: str, module: torch.nn.Module) -> torch.nn.Module:
        state = self.state_dict(name)
        try:
            module.load_state_dict(state)
        except RuntimeError as exc:
            raise CheckpointError(f"{self.path} holds weights for {name!r} that do not fit the "
                                  f"model ({str(exc).splitlines()[0]}). Delete it and train "
                                  "again, or pass the checkpoint made for this model.") from None
        return module

    def load_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        if self.optim_meta is None:
            raise CheckpointError(f"{self.path} holds no optimizer state; it cannot resume training")
        state = {}
        optim = {k: v for k, v in self.tensors.items() if k.startswith("optim.")}
        _check_finite(self.path, optim)
        for key, value in optim.items():
            _, index, name = (key.split(".", 2) + ["", ""])[:3]
            if _whole_number(index) is None or not name:
                raise _corrupt(self.path, f"bad optimizer tensor name {key!r}")
            state.setdefault(_whole_number(index), {})[name] = value
        try:
            optimizer.load_state_dict({"state": state, "param_groups": self.optim_meta["param_groups"]})
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{self.path} holds an optimizer state that does not fit this "
                                  f"optimizer ({exc}). Delete it and train again.") from None

    def rng_state(self, name: str) -> torch.Tensor:
        state = self.tensors.get(f"rng.{name}")
        if state is None or state.dtype != torch.uint8:
            raise _corrupt(self.path, f"no random-generator state {name!r}")
        return state


def save_checkpoint(path, *, config: LabConfig, models: dict, step: int,
                    optimizer: torch.optim.Optimizer | None = None, generators: dict | None = None,
                    metrics: list | None = None, extra: dict | None = None) -> Path:
    """Write a checkpoint atomically (``labkit.lab.utils.atomic_path``: temporary file, then rename).

    models: {part: module}, the part ("vqgan", "transformer", "catnet") the checkpoint holds
    first; generators: {name: torch.Generator}; metrics: the history; extra: JSON-able facts.
    """
    part = next(iter(models))
    tensors = {}
    for name, module in models.items():
        for key, value in module.state_dict().items():
            tensors[f"model.{name}.{key}"] = value.detach().to("cpu").contiguous().clone()
    meta = {"format": FORMAT, "part": part, "config": config.to_json(), "step": str(step),
            "metrics": json.dumps(metrics or []), "extra": json.dumps(extra or {})}
    if optimizer is not None:
        optim_state = optimizer.state_dict()
        for index, values in optim_state["state"].items():
            for key, value in values.items():
                tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).detach().to("cpu").contiguous().clone()
        meta["optim"] = json.dumps({"param_groups": optim_state["param_groups"]})
    for name, generator in (generators or {}).items():
        tensors[f"rng.{name}"] = generator.get_state().clone()
    write_safetensors(path, tensors, meta)
    return Path(path)


def write_safetensors(path, tensors: dict, metadata: dict) -> None:
    """A safetensors file, written atomically. Serialised here and written by Python, so a
    full disk is an ``OSError`` that ``atomic_path`` names (safetensors' own writer hides the
    errno in a message)."""
    data = save(tensors, metadata=metadata)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def read_header(path) -> dict:
    """The metadata of a safetensors file ({str: str}), read without loading any tensor.

    Raises ``CheckpointError`` naming the file for anything that is not a well-formed header.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        raw = handle.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{path} is empty or truncated ({path.stat().st_size} bytes): "
                                  "it is not a labkit checkpoint. Delete it and train again.")
        size = int.from_bytes(raw, "little")
        if size <= 0 or size > 100_000_000:
            raise CheckpointError(f"{path} is not a labkit checkpoint (no safetensors header). "
                                  "Delete it and train again, or pass the right file.")
        text = handle.read(size)
    if len(text) < size:
        raise _corrupt(path, f"truncated header: {len(text)} of {size} bytes")
    try:
        header = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        what = "header nested too deeply" if isinstance(exc, RecursionError) else f"unreadable header: {exc}"
        raise CheckpointError(f"{path} is not a labkit checkpoint ({what}). "
                              "Delete it and train again, or pass the right file.") from None
    if not isinstance(header, dict):
        raise _corrupt(path, f"the header is a JSON {type(header).__name__}, not an object")
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise _corrupt(path, "the header's __metadata__ is not a table of strings")
    return meta


def _json_field(path: Path, meta: dict, key: str, kind: type, default):
    if key not in meta:
        return default
    try:
        value = json.loads(meta[key])
    except (ValueError, RecursionError):
        raise _corrupt(path, f"its {key!r} entry is not JSON") from None
    if not isinstance(value, kind):
        raise _corrupt(path, f"its {key!r} entry is a {type(value).__name__}, not a {kind.__name__}")
    return value


_SCALARS = {
    "None": lambda v: v is None,
    "bool": lambda v: isinstance(v, bool),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
}


def _type_matches(value, annotation) -> bool:
    """Does a JSON value fit a LabConfig field annotation ("int", "tuple[int, ...]", "int | None")?
    Annotations this does not know are accepted: the config's own check still runs."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    for option in (part.strip() for part in text.split("|")):
        if option.startswith("tuple["):
            inner = option[len("tuple["):-1].split(",")[0].strip()
            if isinstance(value, (list, tuple)) and all(_type_matches(v, inner) for v in value):
                return True
        elif option not in _SCALARS or _SCALARS[option](value):
            return True
    return False


def _config_from(path: Path, meta: dict) -> LabConfig:
    values = _json_field(path, meta, "config", dict, None)
    types = {f.name: f.type for f in dataclasses.fields(LabConfig)}
    wrong = [f"{name}={value!r}" for name, value in values.items()
             if name in types and not _type_matches(value, types[name])]
    if wrong:
        raise _corrupt(path, f"config values of the wrong type: {', '.join(wrong)}")
    try:
        return LabConfig.from_dict(values)
    except (ValueError, TypeError) as exc:
        raise _corrupt(path, f"its config is not valid: {exc}") from None


def load_checkpoint(path, *, part: str | None = None, config: LabConfig | None = None,
                    map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint; check it is the expected ``part`` and matches ``config``'s architecture.

    Raises ``FileNotFoundError`` when there is no file, and ``CheckpointError`` naming the
    file (and the problem and the fix) for anything else: a corrupt, truncated or foreign
    file, a malformed header, or a checkpoint from another config.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file: pass the file itself")
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: train this stage first "
                                "(run the notebook or `python -m labkit` command that writes it) "
                                "or pass the path of an existing checkpoint")
    meta = read_header(path)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a labkit checkpoint "
                              f"(format {meta.get('format')!r}, expected {FORMAT!r})")
    missing = [key for key in ("part", "config", "step") if key not in meta]
    if missing:
        raise _corrupt(path, f"its header lacks {', '.join(missing)}")
    if part is not None and meta["part"] != part:
        raise CheckpointError(f"{path} holds a {meta['part']!r} checkpoint, not {part!r}: "
                              "check which file you passed")
    step = _whole_number(meta["step"])
    if step is None:
        raise _corrupt(path, f"step {meta['step'][:40]!r} is not a whole number")
    saved = _config_from(path, meta)
    metrics = _json_field(path, meta, "metrics", list, [])
    extra = _json_field(path, meta, "extra", dict, {})
    optim_meta = _json_field(path, meta, "optim", dict, None)
    if optim_meta is not None and not isinstance(optim_meta.get("param_groups"), list):
        raise _corrupt(path, "its optimizer entry has no param_groups list")
    if config is not None:
        diff = config.arch_diff(saved, meta["part"]) if meta["part"] in ARCH_FIELDS else {}
        if diff:
            fields = ", ".join(f"{k}: yours {a!r} vs checkpoint {b!r}" for k, (a, b) in diff.items())
            raise CheckpointError(
                f"{path} was trained with another {meta['part']} architecture ({fields}). "
                f"Use the profile it was made with (profile {saved.profile!r}), or delete it "
                "and train again with your config.")
    try:
        tensors = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} is truncated or corrupt ({exc}). Delete it and train "
                              "again; an interrupted save never writes this file in place.") from None
    return Checkpoint(path=path, part=meta["part"], config=saved, step=step,
                      metrics=metrics, extra=extra, tensors=tensors, optim_meta=optim_meta)
