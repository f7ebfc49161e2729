"""What every Fréchet distance of the lab is computed on: a feature extractor, named.

    extractor.features(images)      # (n, D) float32, from images in [0, 1] or uint8
    extractor.distance(images, reference)

``labkit.eval.fid.inception_extractor`` (FID) and ``labkit.eval.catnet.catnet_extractor``
(FD_catnet) both return an ``Extractor``, so sweeps and tables treat them alike and always say
which network produced a number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..core.frechet import FeatureStats, frechet_distance

FID_BATCH_SIZE = 50              # the course's (and pytorch-fid's) batch size


def to_float_images(images) -> torch.Tensor:
    """Images as a float tensor (n, 3, H, W) in [0, 1].

    Accepts that already, or stored uint8 images (n, H, W, 3) as NumPy or torch.
    """
    if isinstance(images, np.ndarray):
        # torch cannot share a read-only array (e.g. one made from a PIL image): copy it then.
        images = torch.from_numpy(images if images.flags.writeable else images.copy())
    if images.dtype == torch.uint8:
        if images.dim() != 4 or images.shape[-1] != 3:
            raise ValueError(f"uint8 images must be (n, H, W, 3), got {tuple(images.shape)}")
        # contiguous: pytorch-fid's own loader hands Inception contiguous tensors, and only
        # then are the features bit-identical to its.
        return (images.permute(0, 3, 1, 2).float() / 255).contiguous()
    if not images.is_floating_point() or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be floats (n, 3, H, W) in [0, 1] or uint8 (n, H, W, 3); "
                         f"got {images.dtype} {tuple(images.shape)}")
    return images.contiguous()


@dataclass
class Extractor:
    """A feature extractor and the name its Fréchet distance is reported under.

    metric: "FID", "FD_catnet", "FD_inception_unverified"...
    name: what computes the features ("inception-v3-pool3", "catnet")
    checkpoint_hash: short hash of the weights, recorded next to every score (Inception: the
        file's SHA-256; CatNet: a hash of its tensors, the same for the same weights)
    featurize: (B, 3, H, W) in [0, 1] on ``device`` -> (B, D)
    """
    metric: str
    name: str
    checkpoint_hash: str
    featurize: Callable[[torch.Tensor], torch.Tensor]
    device: torch.device
    batch_size: int = FID_BATCH_SIZE

    @torch.no_grad()
    def features(self, images) -> np.ndarray:
        """images: (n, 3, H, W) in [0, 1] (or uint8 (n, H, W, 3)) -> float32 (n, D)."""
        images = to_float_images(images)
        chunks = [self.featurize(images[i:i + self.batch_size].to(self.device)).float().cpu()
                  for i in range(0, images.shape[0], self.batch_size)]
        return torch.cat(chunks).numpy()

    def statistics(self, images) -> FeatureStats:
        return FeatureStats.from_features(self.features(images))

    def distance(self, images, reference) -> float:
        """Fréchet distance of ``images`` to ``reference`` (images or ``FeatureStats``)."""
        if not isinstance(reference, FeatureStats):
            reference = self.statistics(reference)
        return frechet_distance(self.statistics(images), reference)


__all__ = ["Extractor", "to_float_images", "FID_BATCH_SIZE"]
