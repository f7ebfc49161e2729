"""The course template's way of training and inpainting, kept as the benchmark's baseline.

This is how a student's solution to the course template typically runs, written plainly:

- training: every batch of images goes through the VQGAN encoder (``encode_to_z``) again,
  one mask ratio r ~ U(0, 1) is drawn per batch (not per image), attention is the
  hand-written one (a materialised (B, H, N, N) score matrix), everything in fp32, a
  plain ``torch.optim.AdamW`` (no fused or foreach kernels) and no ``torch.compile``;
- inpainting: one image at a time, T iterations each, and every iteration's prediction
  decoded to pixels (the template saves the image after each step).

It uses labkit's ``BidirectionalTransformer`` with ``set_fused(False)``, so it has the
same parameters as labkit's model and the same weights can be loaded into both; the
tests check that both compute the same loss and the same inpainting. Nothing in
``labkit`` depends on this file: it exists to be measured against (``bench_speed.py``).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from labkit import VQGAN, BidirectionalTransformer, LabConfig, gamma_func, pixel_to_token_mask


class TemplateMaskGit(torch.nn.Module):
    """The course's ``MaskGit`` as a student writes it: encode every batch, one ratio per batch."""

    def __init__(self, cfg: LabConfig, vqgan: VQGAN, transformer: BidirectionalTransformer):
        super().__init__()
        self.config = cfg
        self.vqgan = vqgan
        # A copy, so that switching to the hand-written attention leaves the caller's model alone.
        self.transformer = copy.deepcopy(transformer).set_fused(False)
        self.num_image_tokens = cfg.num_image_tokens
        self.mask_token_id = cfg.mask_token_id
        self.gamma = gamma_func(cfg.train_gamma)

    @torch.no_grad()
    def encode_to_z(self, x: torch.Tensor):
        """x: (B, 3, H, W) in [0, 1] -> z_q (B, C, h, w), z_indices (B, h * w)."""
        z_q, z_indices, _ = self.vqgan.encode(x)
        return z_q, z_indices.reshape(x.shape[0], -1)

    def batch_mask(self, batch: int, generator: torch.Generator | None = None,
                   device: torch.device | str = "cpu") -> torch.Tensor:
        """(B, N) bool: ONE ratio r ~ U(0, 1) for the whole batch, ceil(gamma(r) * N) tokens
        masked in every image, at random positions."""
        n = self.num_image_tokens
        r = torch.rand((), generator=generator).item()
        n_masked = min(max(math.ceil(self.gamma(r) * n), 1), n)
        scores = torch.rand(batch, n, generator=generator)
        positions = scores.argsort(dim=1)[:, :n_masked]                 # (B, n_masked)
        mask = torch.zeros(batch, n, dtype=torch.bool)
        mask.scatter_(1, positions, True)
        return mask.to(device)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                generator: torch.Generator | None = None):
        """x: (B, 3, H, W) -> logits (B, N, K), z_indices (B, N), mask (B, N).

        ``mask`` (True = hidden) may be given, to compare with another implementation.
        """
        _, z_indices = self.encode_to_z(x)
        if mask is None:
            mask = self.batch_mask(x.shape[0], generator, x.device)
        masked_ids = torch.where(mask, torch.full_like(z_indices, self.mask_token_id), z_indices)
        logits = self.transformer(masked_ids)
        return logits, z_indices, mask

    @staticmethod
    def loss(logits: torch.Tensor, z_indices: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over all N positions, as every student in the course wrote it."""
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), z_indices.reshape(-1))

    # ------------------------------------------------------------------ inpainting
    @torch.no_grad()
    def inpainting(self, token_ids: torch.Tensor, still_masked: torch.Tensor, n0: int,
                   m_prev: int, t: int, total_iter: int, gamma, choice_temperature: float):
        """One decoding iteration for ONE image (the course's ``MaskGit.inpainting``).

        token_ids: (1, N) with [MASK] where still masked; still_masked: (1, N) bool.
        Returns the full prediction (1, N), the new still-masked mask (1, N) and m_t.
        """
        log_probs = self.transformer(token_ids).log_softmax(dim=-1)         # (1, N, K)
        confidence, chosen = log_probs.max(dim=-1)                           # argmax and its log-prob
        prediction = torch.where(still_masked, chosen, token_ids)
        ratio = t / total_iter
        temperature = choice_temperature * (1 - ratio)
        if temperature > 0:
            uniform = torch.rand_like(confidence).clamp(1e-20, 1 - 1e-7)
            confidence = confidence + temperature * -torch.log(-torch.log(uniform))
        confidence = confidence.masked_fill(~still_masked, math.inf)
        m_t = min(math.floor(gamma(ratio) * n0), max(m_prev - 1, 0))         # from n0; reveal >= 1
        least_confident = confidence.argsort(dim=1)[:, :m_t]
        new_mask = torch.zeros_like(still_masked)
        new_mask[:, least_confident[0]] = True
        return prediction, new_mask, m_t

    @torch.no_grad()
    def inpaint_one(self, image: torch.Tensor, pixel_mask: torch.Tensor, total_iter: int = 8,
                    gamma: str = "cosine", choice_temperature: float = 4.5,
                    fill: float = 0.5) -> torch.Tensor:
        """image: (3, H, W) in [0, 1]; pixel_mask: (H, W) bool, True = missing.

        Returns (T, 3, H, W): the image decoded after every iteration, known pixels pasted back.
        """
        schedule = gamma_func(gamma)
        masked_image = torch.where(pixel_mask, torch.full_like(image, fill), image)
        _, z_indices = self.encode_to_z(masked_image[None])                    # (1, N)
        still_masked = pixel_to_token_mask(pixel_mask[None], self.config.downsample)
        n0 = m_prev = int(still_masked.sum())
        token_ids = z_indices.masked_fill(still_masked, self.mask_token_id)
        steps = []
        for t in range(1, total_iter + 1):
            prediction, still_masked, m_prev = self.inpainting(
                token_ids, still_masked, n0, m_prev, t, total_iter, schedule, choice_temperature)
            token_ids = prediction.masked_fill(still_masked, self.mask_token_id)
            decoded = self.vqgan.decode_indices(prediction)[0]                 # (3, H, W)
            steps.append(torch.where(pixel_mask, decoded, image))
        return torch.stack(steps)

    @torch.no_grad()
    def inpaint_loop(self, images: torch.Tensor, pixel_masks: torch.Tensor, total_iter: int = 8,
                     **kwargs) -> torch.Tensor:
        """The course's test loop: images (B, 3, H, W), pixel_masks (B, H, W) -> final (B, 3, H, W),
        one image after the other."""
        return torch.stack([self.inpaint_one(image, mask, total_iter, **kwargs)[-1]
                            for image, mask in zip(images, pixel_masks)])


def template_optimizer(cfg: LabConfig, model: TemplateMaskGit) -> torch.optim.AdamW:
    """Plain AdamW with the course's betas and weight decay, the for-loop implementation."""
    return torch.optim.AdamW(model.transformer.parameters(), lr=cfg.mvtm_lr, betas=cfg.betas,
                             weight_decay=cfg.weight_decay, foreach=False, fused=False)


def template_train_step(model: TemplateMaskGit, optimizer: torch.optim.Optimizer,
                        images: torch.Tensor) -> torch.Tensor:
    """One training step on a batch of images (B, 3, H, W) in [0, 1]; returns the loss."""
    logits, z_indices, _ = model(images)
    loss = model.loss(logits, z_indices)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()
