"""The checks of what goes into the core: images with their masks, and token grids. Each raises
ValueError (TypeError for a wrong dtype) naming the argument, what it got and what to do."""

from __future__ import annotations

import numpy as np
import torch

from .masks import as_pixel_mask


def check_images_and_masks(images, pixel_masks, image_size: int):
    """Validate an image batch (B, 3, S, S) in [0, 1] and its masks.

    Returns the images as float32 (float64 NumPy or torch images are converted) and the
    masks as (B, 1, S, S) bool.
    """
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images if images.flags.writeable else images.copy())
    images = torch.as_tensor(images)
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W) RGB, got shape {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch (0 images): give at least one image")
    if not images.is_floating_point():
        raise TypeError(f"images must be floats in [0, 1], got dtype {images.dtype}; "
                        "divide uint8 images by 255")
    images = images.float()
    if tuple(images.shape[-2:]) != (image_size, image_size):
        raise ValueError(f"images are {images.shape[-2]}x{images.shape[-1]} but this model works "
                         f"on {image_size}x{image_size}; resize them (labkit.data.datasets.load_image_folder "
                         "does) or use the matching profile")
    finite = torch.isfinite(images).flatten(1).all(dim=1)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten().tolist()
        raise ValueError(f"images {bad[:10]}{' ...' if len(bad) > 10 else ''} hold NaN or infinite "
                         "pixels: every pixel must be a number in [0, 1]")
    if images.min() < -1e-3 or images.max() > 1 + 1e-3:
        raise ValueError(f"images must lie in [0, 1], got range [{images.min():.3f}, {images.max():.3f}]")
    pixel_masks = as_pixel_mask(pixel_masks)
    if pixel_masks.shape[0] != images.shape[0]:
        raise ValueError(f"{pixel_masks.shape[0]} masks for {images.shape[0]} images: "
                         "give exactly one mask per image")
    if pixel_masks.shape[-2:] != images.shape[-2:]:
        raise ValueError(f"masks are {tuple(pixel_masks.shape[-2:])} but images are "
                         f"{tuple(images.shape[-2:])}: they must have the same size")
    return images, pixel_masks


def check_tokens(tokens, cfg, what: str = "tokens") -> torch.Tensor:
    """Integer token grids (n, N) of ``cfg``'s tokenizer -> a LongTensor."""
    tokens = torch.as_tensor(tokens)
    if tokens.dim() != 2 or tokens.shape[1] != cfg.num_image_tokens or tokens.is_floating_point():
        raise ValueError(f"{what} must be integer token grids (n, {cfg.num_image_tokens}) from "
                         f"extract_tokens, got {tokens.dtype} of shape {tuple(tokens.shape)}")
    if len(tokens) and (tokens.min() < 0 or tokens.max() >= cfg.num_codebook_vectors):
        raise ValueError(f"{what} hold ids outside [0, {cfg.num_codebook_vectors}): were they "
                         "extracted with another tokenizer?")
    return tokens.long()


__all__ = ["check_images_and_masks", "check_tokens"]
