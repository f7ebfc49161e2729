"""Inpaint and score: the one routine behind the pipeline's table, the sweep, the loss
comparison and the notebooks.

    for scored in inpaint_and_score(maskgit, images, pixel_masks, settings, generator):
        scored.scores()["maskgit"]["hole_l1"]       # (B,) per image of this batch
    mean_scores(batches)                            # {row: {metric: mean over all images}}

Images are inpainted ``batch_size`` at a time (one generator consumed batch after batch, so a
run is reproducible for a given batch size); each batch comes back as a ``Scored``: the
decoding result and the image sets (``ROWS``) compared with the ground truth, each scored in
the hole or over the whole image (``METRICS``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ..core.maskgit import DecodeSettings, InpaintResult, MaskGit
from ..core.masks import smooth_fill
from .metrics import masked_l1, masked_psnr

METRICS = ("hole_l1", "hole_psnr", "image_l1", "image_psnr")
# The one list of baselines (the tables' rows, the sweep's methods, the figures' lines):
# name -> what is compared with the ground truth.
BASELINES = {
    "masked_input": "masked input (grey hole)",
    "smooth_fill": "smooth fill of the hole (no learning)",
    "vqgan_masked": "VQGAN round trip of the masked input",
    "one_shot": "MaskGIT in one pass (T = 1)",
    "tokenizer_ceiling": "VQGAN round trip of the ground truth (ceiling)",
}
# Baselines that keep the true known pixels: scored as composites only (there is no raw decode).
PIXEL_BASELINES = ("masked_input", "smooth_fill")
ROWS = {"maskgit": "MaskGIT inpainting (composite)",
        "maskgit_raw": "MaskGIT inpainting (raw decoder output)", **BASELINES}


def pixel_scores(images: torch.Tensor, truth: torch.Tensor, pixel_masks: torch.Tensor) -> dict:
    """images, truth: (B, 3, H, W) in [0, 1]; pixel_masks: True = missing
    -> {metric: (B,)}: L1 and PSNR in the hole and over the whole image."""
    everywhere = torch.ones_like(torch.as_tensor(pixel_masks, dtype=torch.bool))
    return {"hole_l1": masked_l1(images, truth, pixel_masks),
            "hole_psnr": masked_psnr(images, truth, pixel_masks),
            "image_l1": masked_l1(images, truth, everywhere),
            "image_psnr": masked_psnr(images, truth, everywhere)}


def round_trip(maskgit: MaskGit, images: torch.Tensor) -> torch.Tensor:
    """VQGAN encode + decode: (B, 3, H, W) -> (B, 3, H, W), on the model's device."""
    _, z_indices = maskgit.encode_to_z(images.to(maskgit.device))
    return maskgit.vqgan.decode_indices(z_indices)


@dataclass
class Scored:
    """One inpainted batch and the image sets it is compared by.

    index: the batch's slice of the images given; result: the ``InpaintResult``; truth:
    (B, 3, H, W) and pixel_masks: (B, 1, H, W) on the CPU; rows: {row of ``ROWS``:
    (B, 3, H, W) on the CPU} (MaskGIT's only, without baselines).
    """
    index: slice
    result: InpaintResult
    truth: torch.Tensor
    pixel_masks: torch.Tensor
    rows: dict

    @property
    def settings(self) -> DecodeSettings:
        return self.result.settings

    def scores(self) -> dict:
        """{row: {metric: (B,)}}: every row scored against the ground truth."""
        return {row: pixel_scores(images, self.truth, self.pixel_masks) for row, images in self.rows.items()}


@torch.no_grad()
def inpaint_and_score(maskgit: MaskGit, images: torch.Tensor, pixel_masks: torch.Tensor,
                      settings: DecodeSettings | None = None, generator: torch.Generator | None = None,
                      baselines: bool = True, decode_every_step: bool = True,
                      batch_size: int = 128) -> Iterator[Scored]:
    """Inpaint ``images`` (n, 3, H, W) in [0, 1] in their holes ``pixel_masks`` (True = missing),
    ``batch_size`` at a time, and yield each batch's ``Scored``: MaskGIT composite and raw (the
    last decoded iteration) and, with ``baselines``, every row of ``BASELINES`` (one shot is
    the decode's first iteration, which needs ``decode_every_step``).

    settings: ``maskgit.decode_settings(...)`` (None: the config's). The masked-input rows
    are the grey hole's whatever ``settings.fill``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: expected an integer >= 1 (images inpainted at a time)")
    for begin in range(0, len(images), batch_size):
        index = slice(begin, min(begin + batch_size, len(images)))
        result = maskgit.inpaint(images[index], pixel_masks[index], settings, generator,
                                 decode_every_step=decode_every_step)
        truth, masks = result.original, result.pixel_mask
        rows = {"maskgit": result.steps(True)[-1], "maskgit_raw": result.steps(False)[-1]}
        if baselines:
            grey = torch.where(masks, torch.full_like(truth, 0.5), truth)
            rows["masked_input"] = grey
            rows["smooth_fill"] = smooth_fill(truth, masks)
            rows["vqgan_masked"] = round_trip(maskgit, grey)
            if decode_every_step:
                rows["one_shot"] = result.steps(True)[0]
            rows["tokenizer_ceiling"] = round_trip(maskgit, truth)
        yield Scored(index, result, truth.cpu(), masks.cpu(), {row: value.cpu() for row, value in rows.items()})


def gap_closed(l1_masked_input: float, l1_model: float, l1_ceiling: float) -> float:
    """The share of the gap between the masked input and the tokenizer's ceiling that the model
    closes, in hole L1: 0 = no better than the grey hole, 1 = as good as the tokenizer allows.

        (L1_masked_input - L1_model) / (L1_masked_input - L1_tokenizer_ceiling)
    """
    return (l1_masked_input - l1_model) / (l1_masked_input - l1_ceiling)


def mean_scores(batches: list[Scored]) -> dict:
    """{row: {metric: mean over every image of ``batches``}} (images with an empty hole,
    whose hole scores are NaN, are left out of the hole means)."""
    per_batch = [batch.scores() for batch in batches]
    return {row: {metric: float(torch.cat([scores[row][metric] for scores in per_batch]).nanmean())
                  for metric in METRICS}
            for row in per_batch[0]}


__all__ = ["METRICS", "BASELINES", "PIXEL_BASELINES", "ROWS", "pixel_scores", "round_trip", "Scored",
           "inpaint_and_score", "gap_closed", "mean_scores"]
