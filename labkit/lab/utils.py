"""The one device helper, the one seed helper, autocast, the weights fingerprint, where runs
live, and the one atomic write."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import random
from pathlib import Path

import numpy as np
import torch
from torch import nn


DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")


class EnvironmentProblem(RuntimeError):
    """The machine, not the input, stopped the work (no space left on a disk...); the message
    says what to do. The command line exits with ``labkit.lab.command.EXIT_ENVIRONMENT``."""


def get_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given (or ``$LABKIT_DEVICE``), else cuda, then mps, then cpu.

    A device that this machine does not have is refused here, with the choices, instead of
    failing later inside torch: ``get_device("cuda")`` without a GPU raises ValueError.
    """
    device = device or os.environ.get("LABKIT_DEVICE") or None
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"unknown device {str(device)!r}: choose one of "
                         f"{', '.join(DEVICE_CHOICES)}") from None
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} asked for, but this machine has no CUDA GPU "
                             "that torch can use: pass --device cpu (or auto), or install a CUDA "
                             "build of torch on a machine with an NVIDIA GPU")
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r} asked for, but this machine has "
                             f"{torch.cuda.device_count()} CUDA GPU(s) (cuda:0 .. "
                             f"cuda:{torch.cuda.device_count() - 1})")
    elif chosen.type == "mps":
        if not _mps_available():
            raise ValueError(f"device {str(device)!r} asked for, but MPS (Apple-silicon GPU) is "
                             "not available here: pass --device cpu (or auto)")
    elif chosen.type != "cpu":
        raise ValueError(f"device {str(device)!r} is not supported by labkit: choose one of "
                         f"{', '.join(DEVICE_CHOICES)}")
    return chosen


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; returns a CPU ``torch.Generator`` seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def autocast(device: torch.device):
    """bf16 autocast on CUDA (the fast path); a no-op elsewhere, so CPU numbers stay fp32."""
    if torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def fingerprint(obj) -> str:
    """A short hash of a module's weights and buffers, or of a tensor's values and shape."""
    digest = hashlib.blake2b(digest_size=12)
    items = sorted(obj.state_dict().items()) if isinstance(obj, nn.Module) else [("tensor", obj)]
    for key, tensor in items:
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- where files live

_PACKAGE_PARENT = Path(__file__).resolve().parents[2]


def project_root() -> Path:
    """The checkout labkit was installed from (editable install), else the current folder.

    The CLI, the notebooks, the notebook runner, CatNet and the FID cache all resolve their
    default folders from here, so they agree wherever they are started from.
    """
    if (_PACKAGE_PARENT / "pyproject.toml").is_file():
        return _PACKAGE_PARENT
    return Path.cwd()


def given_path(path: str | Path | None, what: str) -> Path | None:
    """``path`` as a Path, or None when none was given; an empty one (``--runs ""``) is
    refused, since it would quietly mean the default, or the current folder."""
    if path is None:
        return None
    if not str(path).strip():
        raise ValueError(f"{what} is an empty path: name a folder or file, or leave the option "
                         "out for the default")
    return Path(path)


def runs_root(root: str | Path | None = None) -> Path:
    """Where ``runs/<profile>/`` lives: ``root`` if given, else ``$LABKIT_RUNS``, else
    ``<project>/runs``."""
    root = given_path(root, "the runs folder (--runs, runs_root)")
    return root or Path(os.environ.get("LABKIT_RUNS") or project_root() / "runs")


def data_root(root: str | Path | None = None) -> Path:
    """Where the toy cats are cached: ``root`` if given, else ``$LABKIT_DATA``, else
    ``<project>/data``."""
    root = given_path(root, "the toy-cat cache folder (--data)")
    return root or Path(os.environ.get("LABKIT_DATA") or project_root() / "data")


def run_dir(cfg, root: str | Path | None = None) -> Path:
    """Where a profile's checkpoints, caches and figures live: ``<runs root>/<profile>``."""
    return runs_root(root) / cfg.profile


@contextlib.contextmanager
def atomic_path(path: str | Path, mode: int = 0o644):
    """Write a file atomically: yields a temporary path beside ``path`` to write to.

        with atomic_path(out / "summary.json") as tmp:
            tmp.write_text(text)

    When the block succeeds the file is flushed to disk, given ``mode`` and renamed over
    ``path``, so a reader (or a crash) never sees half a file; when it fails the temporary
    file is removed and the old ``path``, if any, is left as it was. A full disk raises
    ``EnvironmentProblem`` naming ``path``.
    """
    path = Path(path)
    check_file_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        kept = f"the previous {path.name} is kept as it was" if path.exists() else "nothing was written"
        raise EnvironmentProblem(
            f"no space left on the disk to write {path} ({os.strerror(error.errno)}): {kept}. "
            f"Free space on that disk (df -h {path.parent}) or write somewhere else (--runs, "
            "--data, $LABKIT_RUNS), then run the same command again") from None
    finally:
        tmp.unlink(missing_ok=True)


def check_file_target(path: str | Path) -> None:
    """Refuse to write a file where a folder is (before any work whose result it would hold)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, but labkit writes a file there: move the "
                                "folder away, or choose another path")


def atomic_write_text(path: str | Path, text: str, mode: int = 0o644) -> Path:
    """``path.write_text(text)``, atomically (see ``atomic_path``)."""
    with atomic_path(path, mode) as tmp:
        tmp.write_text(text)
    return Path(path)
