"""Stage 1: the VQGAN tokenizer that turns images into a grid of codebook indices.

    x (B, 3, H, W) in [0, 1]
      -- Encoder (convs, downsample by 2**(levels-1)) -->  z_e (B, C, h, w)
      -- VectorQuantizer: nearest codebook vector    -->  z_q (B, C, h, w), indices (B, h, w)
      -- Decoder (convs, upsample)                   -->  x_rec (B, 3, H, W)

The course hands students a pretrained VQGAN; offline, labkit trains its own, with
reconstruction (L1 + MSE) and commitment losses only (the paper's adversarial and perceptual
terms need a discriminator and pretrained VGG weights). The codebook follows an exponential
moving average (EMA) of the vectors assigned to each code; unused codes restart on random
encoder outputs, so the whole codebook stays in use (``codebook_usage``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import LabConfig


def _norm(channels: int) -> nn.GroupNorm:
    groups = 8 if channels % 8 == 0 else 1
    return nn.GroupNorm(groups, channels)


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            _norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            _norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x):
        return x + self.body(x)


class Encoder(nn.Module):
    def __init__(self, cfg: LabConfig):
        super().__init__()
        channels = cfg.vq_channels
        layers = [nn.Conv2d(3, channels[0], 3, padding=1)]
        for level, width in enumerate(channels):
            layers += [ResBlock(width) for _ in range(cfg.vq_res_blocks)]
            if level + 1 < len(channels):   # halve the resolution between levels
                layers.append(nn.Conv2d(width, channels[level + 1], 4, stride=2, padding=1))
        layers += [_norm(channels[-1]), nn.SiLU(), nn.Conv2d(channels[-1], cfg.latent_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class Decoder(nn.Module):
    def __init__(self, cfg: LabConfig):
        super().__init__()
        channels = cfg.vq_channels[::-1]
        layers = [nn.Conv2d(cfg.latent_dim, channels[0], 3, padding=1)]
        for level, width in enumerate(channels):
            layers += [ResBlock(width) for _ in range(cfg.vq_res_blocks)]
            if level + 1 < len(channels):   # double the resolution between levels
                layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                           nn.Conv2d(width, channels[level + 1], 3, padding=1)]
        layers += [_norm(channels[-1]), nn.SiLU(), nn.Conv2d(channels[-1], 3, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z):
        return self.net(z)


class OneProcess:
    """Where the codebook's statistics come from: this process's batch. Under torchrun the
    training run gives the quantiser ``labkit.lab.distributed.AllProcesses`` instead, which
    does the same over every process's share of the batch."""

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def choose(self, flat: torch.Tensor, n: int) -> torch.Tensor:
        """(n, C) random rows of the batch ``flat`` (M, C)."""
        return flat[torch.randint(0, flat.shape[0], (n,), device=flat.device)]


class VectorQuantizer(nn.Module):
    """Nearest-neighbour quantisation with an EMA codebook and dead-code restarts."""

    def __init__(self, num_codes: int, code_dim: int, beta: float = 0.25, decay: float = 0.99,
                 dead_threshold: float = 1e-3):
        super().__init__()
        self.num_codes, self.code_dim = num_codes, code_dim
        self.beta, self.decay, self.dead_threshold = beta, decay, dead_threshold
        self.register_buffer("codebook", torch.randn(num_codes, code_dim) * 0.1)
        self.register_buffer("ema_count", torch.zeros(num_codes))     # all unused: see _ema_update
        self.register_buffer("ema_sum", torch.zeros(num_codes, code_dim))
        self.processes = OneProcess()

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """flat: (M, C) -> indices (M,) of the nearest codebook vectors (squared L2)."""
        distances = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.codebook.t()
                     + self.codebook.pow(2).sum(1)[None])
        return distances.argmin(dim=1)

    def forward(self, z_e: torch.Tensor):
        """z_e: (B, C, h, w) -> z_q (B, C, h, w) with straight-through gradients,
        indices (B, h, w), commitment loss (scalar)."""
        batch, channels, height, width = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, channels).float()          # (B h w, C)
        indices = self.nearest(flat)
        if self.training:
            self._ema_update(flat.detach(), indices)
        z_q = self.codebook[indices].view(batch, height, width, channels).permute(0, 3, 1, 2)
        commitment = self.beta * F.mse_loss(z_e.float(), z_q.detach())
        z_q = z_e + (z_q - z_e).detach()                                      # straight-through
        return z_q, indices.view(batch, height, width), commitment

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, indices: torch.Tensor) -> None:
        onehot = F.one_hot(indices, self.num_codes).type(flat.dtype)          # (M, K)
        counts = self.processes.sum(onehot.sum(0))
        sums = self.processes.sum(onehot.t() @ flat)
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.ema_count.sum()
        smoothed = (self.ema_count + 1e-5) / (total + self.num_codes * 1e-5) * total
        self.codebook.copy_(self.ema_sum / smoothed[:, None])
        # Restart dead codes on random encoder outputs of this batch. A restarted code gets
        # the threshold as its count: if the data does not keep using it, it is restarted
        # again at the next step, until it lands where encoder outputs are.
        threshold = self.dead_threshold * total / self.num_codes
        dead = self.ema_count < threshold
        n_dead = int(dead.sum())
        if n_dead:
            picks = self.processes.choose(flat, n_dead)
            self.codebook[dead] = picks
            self.ema_sum[dead] = picks * threshold
            self.ema_count[dead] = threshold

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """indices (B, h, w) -> z_q (B, C, h, w)."""
        return self.codebook[indices].permute(0, 3, 1, 2)


class VQGAN(nn.Module):
    def __init__(self, cfg: LabConfig):
        super().__init__()
        self.token_grid = cfg.token_grid
        self.encoder = Encoder(cfg)
        self.quantizer = VectorQuantizer(cfg.num_codebook_vectors, cfg.latent_dim, cfg.beta,
                                         cfg.codebook_decay, cfg.dead_code_threshold)
        self.decoder = Decoder(cfg)

    def encode(self, x: torch.Tensor):
        """x: (B, 3, H, W) in [0, 1] -> z_q (B, C, h, w), indices (B, h, w), commitment loss."""
        return self.quantizer(self.encoder(x * 2 - 1))

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """z_q: (B, C, h, w) -> (B, 3, H, W), roughly in [0, 1] (not clamped, for training)."""
        return self.decoder(z_q) * 0.5 + 0.5

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """indices: (B, N) or (B, h, w) -> images (B, 3, H, W) clamped to [0, 1]."""
        indices = indices.reshape(indices.shape[0], self.token_grid, self.token_grid)
        return self.decode(self.quantizer.lookup(indices)).clamp(0, 1)

    def forward(self, x: torch.Tensor):
        """x -> reconstruction (B, 3, H, W), indices (B, h, w), commitment loss."""
        z_q, indices, commitment = self.encode(x)
        return self.decode(z_q), indices, commitment


def codebook_usage(indices: torch.Tensor, num_codes: int) -> dict:
    """How much of the codebook a set of token indices uses.

    Returns the fraction of codes used at least once and the perplexity exp(H(p)) of the
    code histogram (num_codes when all are used equally, 1 when one code is used).
    """
    counts = torch.bincount(indices.flatten().cpu(), minlength=num_codes).double()
    probs = counts / counts.sum()
    entropy = -(probs[probs > 0] * probs[probs > 0].log()).sum()
    return {"used_fraction": float((counts > 0).double().mean()),
            "codes_used": int((counts > 0).sum()), "perplexity": float(entropy.exp())}
