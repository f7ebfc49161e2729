"""Inpaint and score: the one routine behind the pipeline's table, the sweep and notebook 03.

    scored = inpaint_and_score(maskgit, images, pixel_masks, generator=generator)
    scored.scores()["maskgit"]["hole_l1"]     # (B,) per image
    mean_scores([scored, ...])                # {row: {metric: mean over all images}}

Each row is a set of images compared with the ground truth (``ROWS``); each metric looks
at the hole (the pixels that were missing) or at the whole image (``METRICS``). The
decoding settings left None are the config's; ``scored.settings`` says which were used.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .maskgit import DecodeSettings, InpaintResult, MaskGit
from .masks import smooth_fill
from .metrics import masked_l1, masked_psnr

METRICS = ("hole_l1", "hole_psnr", "image_l1", "image_psnr")
ROWS = {                       # row: what is compared with the ground truth
    "masked_input": "masked input (grey hole)",
    "vqgan_masked": "VQGAN round trip of the masked input",
    "maskgit": "MaskGIT inpainting (composite)",
    "maskgit_raw": "MaskGIT inpainting (raw decoder output)",
    "tokenizer_ceiling": "VQGAN round trip of the ground truth (ceiling)",
    "smooth_fill": "smooth fill of the hole (no learning)",
}
BASELINES = ("masked_input", "vqgan_masked", "tokenizer_ceiling", "smooth_fill")


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

    result: the ``InpaintResult``; truth: (B, 3, H, W) and pixel_masks: (B, 1, H, W) on the CPU;
    rows: {row of ``ROWS``: (B, 3, H, W) on the CPU} (the baselines only with ``baselines``).
    """
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
def inpaint_and_score(maskgit: MaskGit, images: torch.Tensor, pixel_masks: torch.Tensor, *,
                      gamma: str | None = None, total_iter: int | None = None,
                      choice_temperature: float | None = None, sweet_spot: int | None = None,
                      sample: bool = False, generator: torch.Generator | None = None,
                      baselines: bool = True, decode_every_step: bool = True,
                      fill: float | str = 0.5) -> Scored:
    """Inpaint ``images`` (B, 3, H, W) in [0, 1] in their holes ``pixel_masks`` (True = missing)
    and gather the rows to score: MaskGIT composite and raw (the last decoded iteration) and,
    with ``baselines``, the masked input, the VQGAN round trips of it and of the truth, and the
    smooth fill of the hole (``smooth_fill``).

    ``decode_every_step=False`` decodes only the last iteration to pixels; ``fill``: what the
    hole holds when it is encoded (see ``MaskGit.inpaint``). The masked-input rows are the grey
    hole's whatever the fill.
    """
    result = maskgit.inpaint(images, pixel_masks, gamma=gamma, total_iter=total_iter,
                             choice_temperature=choice_temperature, sweet_spot=sweet_spot,
                             generator=generator, sample=sample, decode_every_step=decode_every_step,
                             fill=fill)
    truth, masks = result.original, result.pixel_mask
    rows = {}
    if baselines:
        grey = torch.where(masks, torch.full_like(truth, 0.5), truth)
        rows["masked_input"] = grey
        rows["vqgan_masked"] = round_trip(maskgit, grey)
    rows["maskgit"] = result.steps(True)[-1]
    rows["maskgit_raw"] = result.steps(False)[-1]
    if baselines:
        rows["tokenizer_ceiling"] = round_trip(maskgit, truth)
        rows["smooth_fill"] = smooth_fill(truth, masks)
    return Scored(result, truth.cpu(), masks.cpu(), {row: value.cpu() for row, value in rows.items()})


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


__all__ = ["METRICS", "ROWS", "BASELINES", "pixel_scores", "round_trip", "smooth_fill", "Scored",
           "inpaint_and_score", "gap_closed", "mean_scores"]
