"""Fréchet distances: the course's FID, and the same distance on any other feature extractor.

The Fréchet distance itself (a Gaussian fitted to each set's features, then compared) is
``labkit.core.frechet``. **FID** is that distance on the 2048-d pool3 features of
pytorch-fid's ``InceptionV3``, exactly as the course scores: images in [0, 1], resized to
299x299 and rescaled to [-1, 1] by pytorch-fid itself, batches of 50, float64 statistics
(the tests check the distance against pytorch-fid's ``calculate_frechet_distance``). The Inception weights are a 92 MB download that no
package ships; labkit looks for them, in order, at

1. the ``weights=`` argument (``--weights`` on the command line),
2. ``$LABKIT_INCEPTION_WEIGHTS``,
3. pytorch-fid's own cache: ``$TORCH_HOME/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth``
   (``TORCH_HOME`` defaults to ``~/.cache/torch``),

and fails at once, naming the file and where to put it, when none exists: nothing is
downloaded unless you ask (``allow_download=True`` / ``--allow-download``). A score is
called "FID" only when the file's SHA-256 starts with the hash in its name (``6726825d``),
as torch hub names its files; any other weights give ``FD_inception_unverified``.

Without those weights, ``labkit.eval.catnet`` gives ``FD_catnet``: the same distance on the
features of a small CNN trained on the toy cats. Every extractor is an ``Extractor``, so
sweeps and tables treat both alike and always say which one produced a number.

Command line (the course's scorer, on your own results)::

    python -m labkit fid PRED_DIR GT [--weights PATH] [--stats-cache X.npz] [--device cpu]
    python -m labkit fid PRED_DIR GT --catnet runs/cpu/catnet.safetensors     # FD_catnet instead

GT is a folder of PNGs or the course's CSV (one image of 64*64*3 uint8 values per row).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..core.frechet import FeatureStats, SmallSampleWarning, frechet_distance
from .features import FID_BATCH_SIZE, Extractor
from ..lab.command import run_command
from ..lab.utils import atomic_path, check_file_target, get_device, given_path, runs_root

FID_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   + FID_WEIGHTS_FILENAME)
FID_WEIGHTS_SHA256_PREFIX = "6726825d"
WEIGHTS_ENV = "LABKIT_INCEPTION_WEIGHTS"
FID_DIMS = 2048                  # pool3


class InceptionWeightsMissing(FileNotFoundError):
    """The FID Inception weights are not on this machine (and no download was asked for)."""


class InceptionWeightsError(ValueError):
    """A file given as the FID Inception weights that is not (a readable copy of) them."""


# ---------------------------------------------------------------------------- statistics files
def save_stats(stats: FeatureStats, path, key: str = "") -> Path:
    """Write ``mu``, ``sigma``, ``n`` (and a ``key`` naming what they describe) to ``.npz``, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, mu=stats.mu, sigma=stats.sigma, n=np.int64(stats.n), key=np.str_(key))
    return Path(path)


def load_stats(path) -> tuple[FeatureStats, str]:
    """Read statistics written by ``save_stats`` (or pytorch-fid's ``mu``/``sigma`` files): (stats, key)."""
    with np.load(path, allow_pickle=False) as data:
        n = int(data["n"]) if "n" in data else 0
        key = str(data["key"]) if "key" in data else ""
        return FeatureStats(data["mu"].astype(np.float64), data["sigma"].astype(np.float64), n), key


# ---------------------------------------------------------------------------- images
def read_images(path) -> np.ndarray:
    """Images to score -> uint8 (n, H, W, 3), as they are: never resized (a resize changes
    the score; Inception resizes to 299x299 itself, as pytorch-fid does).

    A folder: every image in it, in name order (the order never changes a Fréchet distance),
    all of one size: an image of another size is refused, naming the file. A .csv: the
    course's ground truth, one image of S*S*3 values per row.
    """
    from ..data.datasets import list_images, read_gt_csv, read_image

    path = Path(path)
    if path.is_dir():
        files = list_images(path)
        images = [read_image(file) for file in files]
        sizes = [image.size for image in images]
        usual = max(set(sizes), key=sizes.count)
        for file, size in zip(files, sizes):
            if size != usual:
                raise ValueError(f"{file} is {size[0]}x{size[1]} but the other images in {path} "
                                 f"are {usual[0]}x{usual[1]}: save it at {usual[0]}x{usual[1]} "
                                 "(labkit never resizes images it scores: that would change the score)")
        return np.stack([np.asarray(image) for image in images])
    if path.suffix.lower() == ".csv":
        return read_gt_csv(path)
    raise FileNotFoundError(f"{path} is neither a folder of images nor the course's .csv")


def content_hash(images: np.ndarray) -> str:
    """SHA-256 of an image set's pixels and shape: the key of its cached statistics."""
    digest = hashlib.sha256(str(images.shape).encode())
    digest.update(np.ascontiguousarray(images).tobytes())
    return digest.hexdigest()


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------- extractors
def default_weights_path() -> Path:
    """Where pytorch-fid itself looks: $TORCH_HOME/hub/checkpoints/<file> (torch hub's cache)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILENAME


def find_inception_weights(weights=None) -> Path | None:
    """The weights file to use (argument, then $LABKIT_INCEPTION_WEIGHTS, then the torch hub
    cache), or None when the cache holds none. A path given explicitly must exist."""
    explicit = (given_path(weights, "the Inception weights (--weights, weights=)")
                or os.environ.get(WEIGHTS_ENV))
    if explicit:
        path = Path(explicit).expanduser()
        source = "weights=" if weights else f"${WEIGHTS_ENV}"
        if path.is_dir():
            raise InceptionWeightsError(f"{source} points to {path}, which is a folder: pass the "
                                        f"weights file itself ({FID_WEIGHTS_FILENAME})")
        if not path.is_file():
            raise InceptionWeightsMissing(f"{source} points to {path}, which does not exist. "
                                          + _how_to_get_weights())
        return path
    path = default_weights_path()
    return path if path.is_file() else None


def _how_to_get_weights() -> str:
    return (f"FID needs pytorch-fid's Inception weights, the file {FID_WEIGHTS_FILENAME} "
            f"(about 92 MB). Put it at {default_weights_path()} (pytorch-fid's cache: "
            "$TORCH_HOME/hub/checkpoints/, TORCH_HOME defaults to ~/.cache/torch), or pass "
            f"its path as weights=... / --weights PATH / ${WEIGHTS_ENV}. Get it on a machine "
            f"with internet from {FID_WEIGHTS_URL} (e.g. `curl -L -o {FID_WEIGHTS_FILENAME} "
            "URL`, or any run of pytorch-fid there fills the cache), or let labkit fetch it "
            "with allow_download=True / --allow-download. Without it, use FD_catnet "
            "(labkit.eval.catnet) on the toy cats: a different number that is never called FID.")


def fid_inception_network() -> torch.nn.Module:
    """The FID Inception architecture (pytorch-fid's ``fid_inception_v3`` without the download):
    torchvision's InceptionV3 with 1008 classes and the blocks patched as TensorFlow's FID model."""
    from pytorch_fid import inception as pf

    network = pf._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    network.Mixed_5b = pf.FIDInceptionA(192, pool_features=32)
    network.Mixed_5c = pf.FIDInceptionA(256, pool_features=64)
    network.Mixed_5d = pf.FIDInceptionA(288, pool_features=64)
    network.Mixed_6b = pf.FIDInceptionC(768, channels_7x7=128)
    network.Mixed_6c = pf.FIDInceptionC(768, channels_7x7=160)
    network.Mixed_6d = pf.FIDInceptionC(768, channels_7x7=160)
    network.Mixed_6e = pf.FIDInceptionC(768, channels_7x7=192)
    network.Mixed_7b = pf.FIDInceptionE_1(1280)
    network.Mixed_7c = pf.FIDInceptionE_2(2048)
    return network


def load_inception(weights=None, device=None, allow_download: bool = False):
    """pytorch-fid's ``InceptionV3`` (pool3 block) with the FID weights, in eval mode.

    Returns (model, weights_path). Raises ``InceptionWeightsMissing`` at once when no
    weights file exists and ``allow_download`` is False; never touches the network then.
    """
    from pytorch_fid import inception as pf

    path = find_inception_weights(weights)
    if path is None:
        if not allow_download:
            raise InceptionWeightsMissing("no Inception weights on this machine. " + _how_to_get_weights())
        path = default_weights_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(FID_WEIGHTS_URL, str(path))
    network = fid_inception_network()
    network.load_state_dict(_read_state_dict(path, network))
    # pytorch-fid's InceptionV3 builds its network through fid_inception_v3(), which downloads
    # unless the file is in torch hub's cache. Handing it the network loaded above, for this
    # one call, keeps the model exactly pytorch-fid's (resize to 299, scaling to [-1, 1],
    # blocks) with a weights file anywhere.
    build = pf.fid_inception_v3
    pf.fid_inception_v3 = lambda: network
    try:
        model = pf.InceptionV3([pf.InceptionV3.BLOCK_INDEX_BY_DIM[FID_DIMS]])
    finally:
        pf.fid_inception_v3 = build
    return model.to(get_device(device)).eval(), path


def _read_state_dict(path: Path, network: torch.nn.Module) -> dict:
    """The state dict in ``path``, checked against ``network``'s keys and shapes.

    weights_only: the file is a plain state dict, so nothing in it may run code. torch's own
    errors for a bad file suggest weights_only=False, never the right advice here.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:                     # torch raises many types for a bad file
        raise InceptionWeightsError(
            f"{path} is not a readable PyTorch weights file ({type(exc).__name__}: it is "
            f"truncated, corrupt or not made by torch.save). Replace it with "
            f"{FID_WEIGHTS_FILENAME}. {_how_to_get_weights()}") from None
    expected = network.state_dict()
    if not isinstance(state, dict):
        raise InceptionWeightsError(f"{path} holds a {type(state).__name__}, not a state dict of "
                                    f"the FID Inception network: replace it with {FID_WEIGHTS_FILENAME}")
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state)
                   if not isinstance(state[k], torch.Tensor) or state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        details = [f"{len(keys)} {what} (e.g. {keys[0]})" for keys, what in
                   ((missing, "missing"), (unexpected, "unexpected"), (wrong, "of the wrong shape"))
                   if keys]
        raise InceptionWeightsError(f"{path} does not hold the FID Inception weights: "
                                    f"{'; '.join(details)} tensors. Replace it with "
                                    f"{FID_WEIGHTS_FILENAME} (pytorch-fid's file).")
    return state


def inception_extractor(weights=None, device=None, allow_download: bool = False) -> Extractor:
    """The FID extractor: pool3 features (B, 2048) of images in [0, 1], batch 50.

    Its metric is "FID" only when the weights file is pytorch-fid's (SHA-256 prefix
    6726825d); any other file of the same architecture gives "FD_inception_unverified".
    """
    device = get_device(device)
    model, path = load_inception(weights, device, allow_download)
    sha = file_sha256(path)
    metric = "FID"
    if not sha.startswith(FID_WEIGHTS_SHA256_PREFIX):
        metric = "FD_inception_unverified"
        warnings.warn(f"{path} is not pytorch-fid's Inception weights file (SHA-256 {sha[:12]}..., "
                      f"expected {FID_WEIGHTS_SHA256_PREFIX}...): its distances are reported as "
                      f"{metric}, not FID.", stacklevel=2)

    def featurize(images: torch.Tensor) -> torch.Tensor:
        return model(images)[0].flatten(1)                 # (B, 2048, 1, 1) -> (B, 2048)

    return Extractor(metric, "inception-v3-pool3", sha[:12], featurize, device, FID_BATCH_SIZE)


# ---------------------------------------------------------------------------- reference cache
def reference_statistics(extractor: Extractor, images: np.ndarray, cache=None) -> FeatureStats:
    """Statistics of reference images, read from the ``.npz`` ``cache`` when it was written for
    the same pixels and the same extractor, else computed and written there.

    A cache file is rewritten only when labkit wrote it (it carries labkit's key) or it cannot
    be read; statistics written by anything else (pytorch-fid's own ``mu``/``sigma`` files) are
    refused, never overwritten.
    """
    key = f"{extractor.metric}:{extractor.checkpoint_hash}:{content_hash(images)}"
    if cache is not None:
        check_file_target(given_path(cache, "the statistics cache (--stats-cache, stats_cache)"))
    if cache is not None and Path(cache).is_file():
        try:
            stats, cached_key = load_stats(cache)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            warnings.warn(f"cannot read the statistics cache {cache} ({type(exc).__name__}); "
                          "recomputing it", stacklevel=2)
        else:
            if cached_key == key:
                return stats
            if not cached_key:
                raise ValueError(f"{cache} holds statistics that labkit did not write (no labkit "
                                 "key: pytorch-fid's own file?), and labkit never overwrites them: "
                                 "pass another --stats-cache (stats_cache=...), or none for the "
                                 f"default under {runs_root() / 'fid-stats'}")
            warnings.warn(f"{cache} holds statistics of other images or another extractor; "
                          "recomputing it", stacklevel=2)
    stats = extractor.statistics(images)
    if cache is not None:
        save_stats(stats, cache, key)
    return stats


def default_stats_cache(extractor: Extractor, images: np.ndarray) -> Path:
    return (runs_root() / "fid-stats"
            / f"{extractor.metric}-{extractor.checkpoint_hash}-{content_hash(images)[:16]}.npz")


def read_pair(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    """Predicted images (folder) and ground truth (folder or course CSV), uint8 (n, H, W, 3),
    with their counts and sizes checked: before the weights load or any feature is extracted."""
    pred_images, gt_images = read_images(pred), read_images(gt)
    for what, path, images in (("predicted", pred, pred_images), ("ground-truth", gt, gt_images)):
        if len(images) < 2:
            raise ValueError(f"{path} holds {len(images)} {what} image(s); a Fréchet distance "
                             "needs at least 2 per side (and is only comparable to the course's "
                             "numbers at the same count)")
    (pred_h, pred_w), (gt_h, gt_w) = pred_images.shape[1:3], gt_images.shape[1:3]
    if (pred_h, pred_w) != (gt_h, gt_w):
        raise ValueError(f"the predictions in {pred} are {pred_w}x{pred_h} but the ground truth "
                         f"{gt} is {gt_w}x{gt_h}: save the predictions at {gt_w}x{gt_h}, the size "
                         "of the images they fill in (labkit never resizes images it scores)")
    if min(len(pred_images), len(gt_images)) < FID_DIMS:
        warnings.warn(f"a Fréchet distance on fewer than {FID_DIMS:,} images ({len(pred_images)} "
                      f"predicted, {len(gt_images)} ground truth) is biased upward: compare it "
                      "only with scores at the same counts.", SmallSampleWarning, stacklevel=2)
    return pred_images, gt_images


def score_images(pred_images: np.ndarray, gt_images: np.ndarray, extractor: Extractor,
                 stats_cache=None) -> dict:
    """Fréchet distance of two image sets from ``read_pair``; the ground truth's statistics
    are cached (``stats_cache``, default under ``<runs root>/fid-stats/``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)      # read_pair said it once
        reference = reference_statistics(extractor, gt_images,
                                         default_stats_cache(extractor, gt_images)
                                         if stats_cache is None else stats_cache)
        value = frechet_distance(extractor.statistics(pred_images), reference)
    return {"metric": extractor.metric, "value": value, "n_pred": len(pred_images),
            "n_gt": len(gt_images), "extractor": extractor.name,
            "extractor_hash": extractor.checkpoint_hash}


def score_folder(pred, gt, extractor: Extractor, stats_cache=None) -> dict:
    """Fréchet distance of predicted images (folder) to ground truth (folder or course CSV)."""
    return score_images(*read_pair(pred, gt), extractor, stats_cache)


def _main(argv) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m labkit fid",
        description="FID of predicted images against ground truth, as the course scores it "
                    "(pytorch-fid Inception pool3, batch 50).")
    parser.add_argument("pred", help="folder of predicted images (PNG)")
    parser.add_argument("gt", help="ground truth: a folder of PNGs or the course's CSV")
    parser.add_argument("--weights", help=f"Inception weights file (default: ${WEIGHTS_ENV}, "
                                           f"then {default_weights_path()})")
    parser.add_argument("--stats-cache", help="an .npz for the ground truth's statistics "
                                              f"(default: {runs_root() / 'fid-stats'}/<hash>.npz)")
    parser.add_argument("--device", help="cpu, cuda, mps (default: the fastest available)")
    parser.add_argument("--allow-download", action="store_true",
                        help="download the Inception weights when they are missing")
    parser.add_argument("--catnet", metavar="PATH",
                        help="score FD_catnet with this CatNet (runs/<profile>/catnet.safetensors) "
                             "instead of FID: the offline stand-in on the toy cats")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    images = read_pair(args.pred, args.gt)
    if args.catnet:
        from .catnet import catnet_extractor, load_catnet
        extractor = catnet_extractor(load_catnet(args.catnet, device=args.device), args.device)
    else:
        extractor = inception_extractor(args.weights, args.device, args.allow_download)
    result = score_images(*images, extractor, args.stats_cache)
    print(f"{result['metric']}: {result['value']:.4f}  ({result['n_pred']} predicted vs "
          f"{result['n_gt']} ground-truth images; {result['extractor']} weights "
          f"{result['extractor_hash']}; {time.perf_counter() - start:.0f} s)")
    return 0


def main(argv=None) -> int:
    """``python -m labkit fid ...``: errors as one message (``labkit.lab.command.run_command``)."""
    return run_command(_main, argv)
