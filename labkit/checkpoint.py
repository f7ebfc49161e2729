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

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import LabConfig

FORMAT = "labkit-checkpoint-1"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: corrupt, foreign, or from another config."""


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
        prefix = f"model.{name}."
        state = {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}
        if not state:
            raise CheckpointError(f"{self.path} holds no weights for {name!r}")
        return state

    def load_model(self, name: str, module: torch.nn.Module) -> torch.nn.Module:
        module.load_state_dict(self.state_dict(name))
        return module

    def load_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        if self.optim_meta is None:
            raise CheckpointError(f"{self.path} holds no optimizer state; it cannot resume training")
        state = {}
        for key, value in self.tensors.items():
            if key.startswith("optim."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": self.optim_meta["param_groups"]})

    def rng_state(self, name: str) -> torch.Tensor:
        return self.tensors[f"rng.{name}"]


def save_checkpoint(path, *, part: str, config: LabConfig, models: dict, step: int,
                    optimizer: torch.optim.Optimizer | None = None, generators: dict | None = None,
                    metrics: list | None = None, extra: dict | None = None) -> Path:
    """Write a checkpoint atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_header(path) -> dict:
    """The JSON header of a safetensors file, read without loading any tensor."""
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
        try:
            header = json.loads(handle.read(size))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path} is not a labkit checkpoint (unreadable header: {exc}). "
                                  "Delete it and train again, or pass the right file.") from None
    return header.get("__metadata__") or {}


def load_checkpoint(path, *, part: str | None = None, config: LabConfig | None = None,
                    map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint; check it is the expected ``part`` and matches ``config``'s architecture.

    Raises ``FileNotFoundError`` when there is no file, and ``CheckpointError`` (naming the
    problem and the fix) when the file is corrupt, foreign or from another config.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: train this stage first "
                                "(run the notebook or `python -m labkit` command that writes it) "
                                "or pass the path of an existing checkpoint")
    meta = read_header(path)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a labkit checkpoint "
                              f"(format {meta.get('format')!r}, expected {FORMAT!r})")
    if part is not None and meta["part"] != part:
        raise CheckpointError(f"{path} holds a {meta['part']!r} checkpoint, not {part!r}: "
                              "check which file you passed")
    saved = LabConfig.from_dict(json.loads(meta["config"]))
    if config is not None:
        diff = config.arch_diff(saved, meta["part"])
        if diff:
            fields = ", ".join(f"{k}: yours {a!r} vs checkpoint {b!r}" for k, (a, b) in diff.items())
            raise CheckpointError(
                f"{path} was trained with another {meta['part']} architecture ({fields}). "
                f"Use the profile it was made with (profile {saved.profile!r}), or delete it "
                "and train again with your config.")
    try:
        tensors = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is truncated or corrupt ({exc}). Delete it and train "
                              "again; an interrupted save never writes this file in place.") from None
    return Checkpoint(path=path, part=meta["part"], config=saved, step=int(meta["step"]),
                      metrics=json.loads(meta["metrics"]), extra=json.loads(meta.get("extra", "{}")),
                      tensors=tensors, optim_meta=json.loads(meta["optim"]) if "optim" in meta else None)
