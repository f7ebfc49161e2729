"""CatNet: a small CNN that knows the toy cats, for an honest offline Fréchet distance.

FID needs Inception weights that cannot be downloaded here. CatNet is the offline
stand-in: a small CNN trained (deterministically, in minutes on a CPU) to read every
attribute of a toy cat from its picture: a classification head per categorical attribute
(fur colour, pattern, eyes, mouth...) and a regression head per continuous one (head
geometry, tilt, offset...). Its features must therefore encode what makes a cat look like
a toy cat, which is what a Fréchet distance should compare.

    x (B, 3, S, S) in [0, 1]
      -- per width in cfg.catnet_channels: a 4x4 stride-2 conv and a 3x3 conv
         (GroupNorm + SiLU after each)          --> (B, C, S / 2**L, S / 2**L)
      -- flatten, Linear                         --> features (B, D), D = 2 * catnet_channels[-1]
                                                     (pre-activation: what FD_catnet uses)
      -- SiLU, one Linear head per attribute     --> logits (B, classes) or a value (B,)

The spatial map is flattened rather than averaged so position (offset, tilt) survives.
D is 128 for the ``cpu`` and ``gpu`` profiles, 32 for ``smoke``.

``FD_catnet`` is the Fréchet distance (``labkit.eval.fid.frechet_distance``, the same function
as FID) on these features. It is not FID and is never called FID: its numbers depend on
this network, so every score carries a hash of its weights (``net.checkpoint_hash``).

Training augments only in ways that keep the labels true, and changes the labels with the
image: a mirror flips the sign of tilt and offset_x and swaps an odd-eyed cat's blue eye
(``toycats.mirror_labels``); a shift by (dx, dy) pixels adds (dx, dy) / S to the offsets.

It also degrades a share ``cfg.catnet_degrade`` of the training images without changing
their labels (``degrade``): a Gaussian blur, a downscale-upscale, or both (what a VQGAN's
decoder does to fine detail), each with a small colour jitter. A blurred cat is still the
same cat, so the features learn to ignore blur; a grey stripe across an eye is never
shown, so missing content still moves them. Without it (``catnet_degrade=0``) FD_catnet
ranked a grey-striped input closer to real cats than the tokenizer's own round trip.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..lab.checkpoint import CheckpointError, load_checkpoint
from ..config import LabConfig
from .features import Extractor, to_float_images
from ..lab.run import RunOptions, TrainingRun, data_provenance, finished_steps, refuse_unfinished
from ..data.toycats import ATTRIBUTES, RENDER_VERSION, mirror_labels
from ..core.train import lr_at
from ..lab.utils import data_root, fingerprint, get_device, seed_everything
from ..lab.utils import run_dir as default_run_dir

CATNET_FILE = "catnet.safetensors"
MAX_SHIFT = 2          # pixels of random shift in training
BLUR_SIGMA = (0.4, 1.6)    # Gaussian blur, pixels at 64x64 (scaled with the image size)
RESAMPLE = (2, 4)          # downscale-upscale factors
JITTER = (0.05, 0.03)      # colour gain +- 5 %, offset +- 0.03, per channel
DEGRADE_SEED = 1_000_003   # the degradations' random stream: cfg.seed + this


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(8 if channels % 8 == 0 else 1, channels)


class CatNet(nn.Module):
    """The attribute CNN. ``forward`` gives the heads' outputs, ``forward_features`` the
    (B, D) pre-activation features of the penultimate layer."""

    def __init__(self, cfg: LabConfig, attributes: dict = ATTRIBUTES):
        super().__init__()
        channels = cfg.catnet_channels
        if cfg.image_size % 2 ** len(channels):
            raise ValueError(f"image_size={cfg.image_size} must be divisible by "
                             f"2**len(catnet_channels)={2 ** len(channels)}")
        self.image_size = cfg.image_size
        self.attributes = dict(attributes)
        # No full-resolution stem: on a CPU it would cost more than all the rest, and the first
        # stride-2 conv still sees every pixel (so blur and noise reach the features).
        layers, width_in = [], 3
        for width in channels:
            layers += [nn.Conv2d(width_in, width, 4, stride=2, padding=1), _norm(width), nn.SiLU(),
                       nn.Conv2d(width, width, 3, padding=1), _norm(width), nn.SiLU()]
            width_in = width
        self.body = nn.Sequential(*layers)
        grid = cfg.image_size // 2 ** len(channels)
        self.feature_dim = 2 * channels[-1]
        self.embed = nn.Linear(channels[-1] * grid * grid, self.feature_dim)
        self.heads = nn.ModuleDict({
            name: nn.Linear(self.feature_dim, len(values) if kind == "categorical" else 1)
            for name, (kind, values) in self.attributes.items()})
        self.checkpoint_hash = "untrained"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, S, S) in [0, 1] -> (B, D) pre-activation features."""
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(f"CatNet reads {self.image_size}x{self.image_size} images, got "
                             f"{x.shape[-2]}x{x.shape[-1]}: use the profile the net was trained with")
        return self.embed(self.body(x * 2 - 1).flatten(1))

    def forward(self, x: torch.Tensor, return_features: bool = False):
        """x: (B, 3, S, S) -> {attribute: logits (B, classes) or normalised value (B,)},
        and the (B, D) features too with ``return_features``."""
        features = self.forward_features(x)
        hidden = F.silu(features)
        outputs = {name: head(hidden) if self.attributes[name][0] == "categorical"
                   else head(hidden).squeeze(-1) for name, head in self.heads.items()}
        return (outputs, features) if return_features else outputs

    @torch.no_grad()
    def predict(self, images, batch_size: int = 256, return_features: bool = False):
        """images (n, 3, S, S) in [0, 1] or uint8 (n, S, S, 3) -> {attribute: (n,) NumPy}:
        int codes for categorical attributes, values in the attribute's units otherwise.
        With ``return_features`` also the float32 (n, D) features, from the same pass."""
        images = to_float_images(images)
        device = next(self.parameters()).device
        parts = [self(images[i:i + batch_size].to(device), return_features=True)
                 for i in range(0, len(images), batch_size)]
        out = {}
        for name, (kind, values) in self.attributes.items():
            joined = torch.cat([outputs[name] for outputs, _ in parts]).float().cpu()
            if kind == "categorical":
                out[name] = joined.argmax(-1).numpy()
            else:
                out[name] = denormalise(joined.numpy(), values)
        if return_features:
            return out, torch.cat([features for _, features in parts]).float().cpu().numpy()
        return out


def normalise(values: np.ndarray, bounds) -> np.ndarray:
    """Continuous attribute values -> [-1, 1] over the attribute's sampling range."""
    lo, hi = bounds
    return (2 * (np.asarray(values, np.float32) - lo) / (hi - lo) - 1).astype(np.float32)


def denormalise(values: np.ndarray, bounds) -> np.ndarray:
    lo, hi = bounds
    return ((np.asarray(values, np.float32) + 1) / 2 * (hi - lo) + lo).astype(np.float32)


def catnet_loss(outputs: dict, targets: dict, attributes: dict = ATTRIBUTES) -> tuple[torch.Tensor, dict]:
    """Mean over attributes of cross-entropy (categorical) or MSE on normalised values
    (continuous). targets: {name: (B,) int64 codes or normalised float}. Returns
    (loss, {name: float})."""
    parts = {}
    for name, (kind, _) in attributes.items():
        if kind == "categorical":
            parts[name] = F.cross_entropy(outputs[name].float(), targets[name])
        else:
            parts[name] = F.mse_loss(outputs[name].float(), targets[name])
    loss = torch.stack(list(parts.values())).mean()
    return loss, {name: value.item() for name, value in parts.items()}


def augment(images: torch.Tensor, labels: dict, flip: torch.Tensor, shift: torch.Tensor):
    """Mirror and shift a batch, changing its labels to match.

    images: (B, 3, S, S); labels: {name: (B,) NumPy}; flip: (B,) bool; shift: (B, 2) int
    pixels (dx right, dy down). Uncovered borders repeat the edge pixels.
    """
    size = images.shape[-1]
    flip_np = flip.numpy()
    mirrored = mirror_labels(labels)
    labels = {name: np.where(flip_np, mirrored[name], labels[name]) for name in labels}
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    padded = F.pad(images, (MAX_SHIFT,) * 4, mode="replicate")
    # out[y, x] = in[y - dy, x - dx]: the content moves right by dx and down by dy.
    images = torch.stack([padded[b, :, MAX_SHIFT - dy:MAX_SHIFT - dy + size,
                                 MAX_SHIFT - dx:MAX_SHIFT - dx + size]
                          for b, (dx, dy) in enumerate(shift.tolist())])
    labels["offset_x"] = labels["offset_x"] + shift[:, 0].numpy().astype(np.float32) / size
    labels["offset_y"] = labels["offset_y"] + shift[:, 1].numpy().astype(np.float32) / size
    return images, labels


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """(3, S, S) -> (3, S, S): a separable Gaussian blur of ``sigma`` pixels, edges reflected."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=image.dtype)
    kernel = torch.exp(-x ** 2 / (2 * sigma ** 2))
    kernel = (kernel / kernel.sum()).expand(3, 1, 1, -1)                # (3, 1, 1, K)
    out = F.pad(image[None], (radius,) * 4, mode="reflect")
    out = F.conv2d(out, kernel, groups=3)                                # along x
    return F.conv2d(out, kernel.transpose(-1, -2), groups=3)[0]         # along y


def degrade(images: torch.Tensor, generator: torch.Generator, share: float) -> torch.Tensor:
    """Blur, resample and colour-jitter a random ``share`` of a batch; the labels stay true.

    images: (B, 3, S, S) in [0, 1]. Each chosen image gets one of: a Gaussian blur (sigma in
    ``BLUR_SIGMA`` pixels at 64x64, scaled with S), a downscale by a factor of ``RESAMPLE``
    (area) and back up (bilinear), or both, the VQGAN-like loss of fine detail; then a
    colour gain and offset per channel (``JITTER``). Every batch draws the same count of
    random numbers from ``generator`` whatever is chosen, so a run is deterministic under
    its seed and resumes bit-identically.
    """
    batch, size = images.shape[0], images.shape[-1]
    chosen = (torch.rand(batch, generator=generator) < share).tolist()
    kind = torch.randint(3, (batch,), generator=generator).tolist()      # 0 blur, 1 resample, 2 both
    lo, hi = BLUR_SIGMA
    sigma = ((lo + (hi - lo) * torch.rand(batch, generator=generator)) * size / 64).tolist()
    factor = torch.randint(len(RESAMPLE), (batch,), generator=generator).tolist()
    gain = 1 + JITTER[0] * (2 * torch.rand(batch, 3, 1, 1, generator=generator) - 1)
    offset = JITTER[1] * (2 * torch.rand(batch, 3, 1, 1, generator=generator) - 1)
    out = []
    for b, image in enumerate(images):
        if chosen[b]:
            if kind[b] != 1:
                image = gaussian_blur(image, sigma[b])
            if kind[b] != 0:
                small = F.avg_pool2d(image[None], RESAMPLE[factor[b]])
                image = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)[0]
            image = (image * gain[b] + offset[b]).clamp(0, 1)
        out.append(image)
    return torch.stack(out)


def _targets(labels: dict, attributes: dict, device) -> dict:
    out = {}
    for name, (kind, values) in attributes.items():
        if kind == "categorical":
            out[name] = torch.as_tensor(labels[name], dtype=torch.long, device=device)
        else:
            out[name] = torch.as_tensor(normalise(labels[name], values), device=device)
    return out


def train_catnet(cfg: LabConfig, train=None, val=None, run_dir=None,
                 options: RunOptions | None = None, data=None) -> CatNet:
    """Train CatNet on toy cats (``cfg.catnet_steps`` steps) and checkpoint it.

    train, val: ImageSets of toy cats (their ``images`` uint8 (n, S, S, 3) and ``labels``
    {attribute: (n,)} as ``labkit.data.toycats`` encodes them); without them, the ``train`` and
    ``val`` splits of ``cfg``'s toy cats (cached under the folder ``data``, default
    ``labkit.lab.utils.data_root()``). The run is deterministic on a CPU for a given
    ``cfg.seed``. With ``run_dir`` the net is checkpointed to ``run_dir/catnet.safetensors``
    like the other stages (calling again resumes, or loads a finished net).
    ``net.checkpoint_hash`` is a short hash of its weights. With ``val``, per-attribute accuracy
    / error is stored in the checkpoint (``net.extra["val"]``).
    """
    options = options or RunOptions()
    if train is None:
        from ..data.datasets import toy_cats
        train = toy_cats(cfg, "train", root=data_root(data), progress=options.progress)
        if val is None:
            val = toy_cats(cfg, "val", root=data_root(data), progress=options.progress)
    images, labels = train.images, train.labels
    data_source = options.data_source or train.source
    val_images, val_labels = (val.images, val.labels) if val is not None else (None, None)
    missing = [name for name in ATTRIBUTES if name not in (labels or {})]
    if missing:
        raise ValueError(f"CatNet learns the toy cats' attribute labels, and these images lack "
                         f"{missing}: train it on toy cats (labkit.data.datasets.toy_cats); on other "
                         "images use FID instead of FD_catnet")
    device = get_device(options.device)
    pixels = torch.from_numpy(np.ascontiguousarray(images))                   # uint8 (n, S, S, 3)
    generator = seed_everything(cfg.seed)
    # A stream of its own, so that catnet_degrade=0 draws the same batches as before it existed.
    degrade_rng = torch.Generator().manual_seed(cfg.seed + DEGRADE_SEED)
    net = CatNet(cfg).to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.catnet_lr, betas=cfg.betas,
                                  weight_decay=cfg.weight_decay)
    path = None if run_dir is None else Path(run_dir) / CATNET_FILE
    extra = {"attributes": {name: [kind, list(values)] for name, (kind, values) in net.attributes.items()},
             "feature_dim": net.feature_dim, "render_version": RENDER_VERSION,
             "degrade": cfg.catnet_degrade}
    extra["data"] = data_provenance(pixels, data_source or f"{len(pixels)} labelled images")
    run = TrainingRun(cfg, path, {"catnet": net}, optimizer, {"batch": generator, "degrade": degrade_rng},
                      options, extra, check=lambda ckpt: _check_degrade(ckpt.extra, cfg, path))
    if run.finished:
        return load_catnet(path, cfg, device)
    labels = {name: np.asarray(labels[name]) for name in net.attributes}
    _catnet_loop(run, cfg, net, pixels, labels, generator, degrade_rng, val_images, val_labels)
    net.checkpoint_hash = fingerprint(net)[:12]
    net.metrics, net.extra = run.history, run.facts
    return net.eval()


def _check_degrade(extra: dict, cfg: LabConfig, path) -> None:
    """Refuse a CatNet trained with another share of degraded images than ``cfg`` asks for
    (a checkpoint from before ``catnet_degrade`` existed was trained with none)."""
    trained = extra.get("degrade", 0.0)
    if trained != cfg.catnet_degrade:
        raise CheckpointError(
            f"{path} was trained with catnet_degrade={trained} but the config asks for "
            f"{cfg.catnet_degrade}: its FD_catnet would not be comparable. Delete it to train "
            f"the net again, or set catnet_degrade={trained}")


def _catnet_loop(run: TrainingRun, cfg: LabConfig, net: CatNet, pixels: torch.Tensor, labels: dict,
                 generator: torch.Generator, degrade_rng: torch.Generator, val_images, val_labels) -> None:
    net.train()
    with run:
        while run.more():
            # cosine decay to 10 % of the rate, no warmup: a net that ends calm gives stable features
            lr = run.set_lr(lr_at(run.step, cfg.catnet_lr, 0, run.total))
            # batch: random cats, mirrored and shifted, their labels changed to match
            index = torch.randint(len(pixels), (cfg.catnet_batch_size,), generator=generator)
            flip = torch.rand(cfg.catnet_batch_size, generator=generator) < 0.5
            shift = torch.randint(-MAX_SHIFT, MAX_SHIFT + 1, (cfg.catnet_batch_size, 2), generator=generator)
            batch, batch_labels = augment(to_float_images(pixels[index]),
                                          {k: v[index.numpy()] for k, v in labels.items()}, flip, shift)
            if cfg.catnet_degrade > 0:      # blurred, resampled, colour-jittered: labels unchanged
                batch = degrade(batch, degrade_rng, cfg.catnet_degrade)
            # loss = mean over attributes of CE (categorical) or MSE (continuous, normalised)
            loss, _ = catnet_loss(net(batch.to(run.device)),
                                  _targets(batch_labels, net.attributes, run.device), net.attributes)
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            run.check_finite(loss, grad_norm)
            run.optimizer.step()
            run.count_step()
            if run.log_due():
                run.log(lr, loss=loss.item())           # this step's loss
            if run.step == run.total and val_images is not None:   # saved with the last checkpoint
                run.facts["val"] = attribute_accuracy(net.eval(), val_images, val_labels)
                net.train()
            run.end_step()


def load_catnet(path, cfg: LabConfig | None = None, device=None, allow_unfinished: bool = False) -> CatNet:
    """A trained CatNet from ``path`` (the file, or the run folder holding catnet.safetensors).

    ``net.checkpoint_hash`` is a short hash of the weights (not of the file, whose metadata
    holds training times), to record beside every FD_catnet: the same weights, trained
    twice, give the same hash. A net whose training stopped early is refused unless
    ``allow_unfinished``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CATNET_FILE
    checkpoint = load_checkpoint(path, part="catnet", config=cfg)
    if not allow_unfinished:
        refuse_unfinished(str(path), finished_steps(checkpoint),
                          "Finish it first: train_catnet (or load_or_train_catnet) with the same "
                          "run folder resumes it; or pass allow_unfinished=True.")
    if cfg is not None:
        _check_degrade(checkpoint.extra, cfg, path)
    attributes = {name: (kind, tuple(values))
                  for name, (kind, values) in checkpoint.extra["attributes"].items()}
    if attributes != ATTRIBUTES or checkpoint.extra.get("render_version") != RENDER_VERSION:
        raise CheckpointError(f"{path} was trained on toy cats drawn or labelled differently from "
                              "today's labkit.data.toycats (attributes or RENDER_VERSION changed): "
                              "delete it and train again")
    net = CatNet(checkpoint.config, attributes)
    checkpoint.load_model("catnet", net)
    net.checkpoint_hash = fingerprint(net)[:12]
    net.metrics, net.extra = checkpoint.metrics, checkpoint.extra
    return net.to(get_device(device)).eval()


def load_or_train_catnet(cfg: LabConfig, run_dir=None, device=None, progress: bool = True,
                         data=None) -> CatNet:
    """The profile's CatNet from ``<run_dir>/catnet.safetensors`` (default
    ``labkit.lab.utils.run_dir(cfg)``), trained (or resumed) there first if missing or
    unfinished, on the toy cats cached under the folder ``data``."""
    path = Path(run_dir if run_dir is not None else default_run_dir(cfg)) / CATNET_FILE
    if not path.is_file() or _unfinished(path):
        train_catnet(cfg, run_dir=path.parent, options=RunOptions(device=device, progress=progress), data=data)
    return load_catnet(path, cfg, device)


def _unfinished(path: Path) -> bool:
    progress = finished_steps(load_checkpoint(path, part="catnet"))
    return progress is not None and progress[0] < progress[1]


def catnet_extractor(net: CatNet, device=None, batch_size: int = 256) -> Extractor:
    """The FD_catnet extractor: CatNet's (B, D) pre-activation features."""
    device = get_device(device) if device is not None else next(net.parameters()).device
    net = net.to(device).eval()
    return Extractor("FD_catnet", "catnet", net.checkpoint_hash, net.forward_features, device, batch_size)


def attribute_accuracy(net: CatNet, images, labels: dict) -> dict:
    """How well the net reads the true labels: accuracy per categorical attribute,
    mean absolute error (attribute units) per continuous one."""
    predicted = net.predict(images)
    out = {}
    for name, (kind, _) in net.attributes.items():
        truth = np.asarray(labels[name])
        if kind == "categorical":
            out[f"acc_{name}"] = float((predicted[name] == truth).mean())
        else:
            out[f"mae_{name}"] = float(np.abs(predicted[name] - truth).mean())
    return out


def attribute_agreement(net: CatNet, pred_images, gt_images, per_image: bool = False) -> dict:
    """Does an inpainted image show the same cat as its ground truth, attribute by attribute?

    Both sets go through the net. Categorical: ``agree_<name>`` = 1 where the predicted
    classes match; continuous: ``abserr_<name>`` = |difference| of the predicted values,
    in the attribute's units. Returns per-image (n,) arrays with ``per_image``, else means.
    """
    out = agreement_from_predictions(net.predict(pred_images), net.predict(gt_images), net.attributes)
    return out if per_image else {key: float(value.mean()) for key, value in out.items()}


def agreement_from_predictions(pred: dict, gt: dict, attributes: dict = ATTRIBUTES) -> dict:
    """Per-image agreement of two ``CatNet.predict`` outputs: {agree_<name> | abserr_<name>: (n,)}."""
    out = {}
    for name, (kind, _) in attributes.items():
        if kind == "categorical":
            out[f"agree_{name}"] = (pred[name] == gt[name]).astype(np.float64)
        else:
            out[f"abserr_{name}"] = np.abs(pred[name] - gt[name]).astype(np.float64)
    return out
