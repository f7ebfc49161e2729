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


def check_token_grids(z_indices, token_mask, cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """Token grids to decode: z_indices (B, N) integer ids, token_mask (B, N) bool or 0/1
    (True = unknown); every known id in the codebook [0, K) (under the mask any id will do: it
    becomes [MASK]). Returns them as a LongTensor and a bool tensor."""
    z_indices, token_mask = torch.as_tensor(z_indices), torch.as_tensor(token_mask)
    if z_indices.shape != token_mask.shape or z_indices.dim() != 2:
        raise ValueError(f"z_indices {tuple(z_indices.shape)} and token_mask "
                         f"{tuple(token_mask.shape)} must both be (B, N)")
    if z_indices.shape[1] != cfg.num_image_tokens:
        raise ValueError(f"expected N={cfg.num_image_tokens} tokens per image, got {z_indices.shape[1]}")
    if z_indices.is_floating_point() or z_indices.is_complex() or z_indices.dtype == torch.bool:
        raise TypeError(f"z_indices must be integer token ids, got dtype {z_indices.dtype}")
    if token_mask.dtype != torch.bool:
        if not bool(((token_mask == 0) | (token_mask == 1)).all()):
            raise ValueError(f"token_mask must be boolean or 0/1 (1 = unknown), got values such as "
                             f"{token_mask[(token_mask != 0) & (token_mask != 1)][0].item()!r}")
        token_mask = token_mask.bool()
    known = z_indices[~token_mask.to(z_indices.device)]
    outside = known[(known < 0) | (known >= cfg.num_codebook_vectors)]
    if len(outside):
        raise ValueError(f"z_indices hold the id {outside[0].item()} at a known position: token ids "
                         f"are the codebook's, 0..{cfg.num_codebook_vectors - 1} (the [MASK] id "
                         f"{cfg.mask_token_id} only where token_mask is True)")
    return z_indices.long(), token_mask


def check_generator(generator) -> None:
    """A random generator argument: a ``torch.Generator`` or None."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator={generator!r}: expected a torch.Generator or None, e.g. "
                        "torch.Generator().manual_seed(0)")


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


__all__ = ["check_images_and_masks", "check_token_grids", "check_generator", "check_tokens"]
