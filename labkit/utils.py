"""The one device helper, the one seed helper, autocast and the weights fingerprint."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random

import numpy as np
import torch
from torch import nn


def get_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given (or ``$LABKIT_DEVICE``), else cuda, then mps, then cpu."""
    device = device or os.environ.get("LABKIT_DEVICE") or None
    if device is not None and str(device) != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


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
