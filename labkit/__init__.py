"""labkit: the code behind the MaskGIT inpainting lab, one folder per role.

    core/      the lesson: attention, transformer, VQGAN, schedules, masks, MaskGit, the
               training steps and loops, the Fréchet distance (imports only itself and config)
    data/      toy cats, datasets and the course's layout, the holes (brush strokes...)
    lab/       runs and checkpoints, several GPUs, device and seeds, progress bars, the command
               line, notebook parameters and setup, the notebook runner, the pipeline, input checks
    eval/      Inception / FID, CatNet, metrics, inpaint-and-score, the sweep, verdicts
    teaching/  exercises, the grader, the student edition, pitfalls, the loss comparison,
               plots, the decoding explorer
    config.py  one config type and the profiles smoke / cpu / gpu

The names below are the ones a notebook or a script needs most; everything else is imported
from its module (``from labkit.eval.sweep import SweepResult``).
"""

from .config import LabConfig, get_config
from .core.attention import MultiHeadAttention
from .core.maskgit import DecodeSettings, DecodeTrace, InpaintResult, MaskGit, mvtm_loss
from .core.masks import pixel_to_token_mask
from .core.schedules import SCHEDULES, gamma_func
from .core.transformer import BidirectionalTransformer
from .core.vqgan import VQGAN, codebook_usage
from .data.datasets import (DataError, ImageSet, load_course_dataset, load_dataset, load_image_folder,
                            toy_cats)
from .data.holes import brush_mask, make_masks
from .data.toycats import ATTRIBUTES, mirror_labels, render_cat, render_cats
from .eval.catnet import (CatNet, attribute_agreement, catnet_extractor, load_catnet,
                          load_or_train_catnet, train_catnet)
from .core.frechet import FeatureStats, SmallSampleWarning, frechet_distance
from .eval.features import Extractor
from .eval.fid import InceptionWeightsError, InceptionWeightsMissing, inception_extractor
from .eval.metrics import masked_l1, masked_psnr, masked_token_accuracy
from .eval.sweep import SweepResult, default_extractors, sweep
from .lab.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .lab.training import extract_tokens, load_maskgit, load_vqgan, train_mvtm, train_vqgan
from .lab.utils import data_root, get_device, run_dir, runs_root, seed_everything
from .teaching.grade import grade

__version__ = "0.1.0"
__all__ = [
    "ATTRIBUTES", "BidirectionalTransformer", "CatNet", "CheckpointError", "DataError",
    "DecodeSettings", "DecodeTrace", "Extractor", "FeatureStats", "ImageSet", "InceptionWeightsError",
    "InceptionWeightsMissing", "InpaintResult", "LabConfig", "MaskGit", "MultiHeadAttention",
    "SCHEDULES", "SmallSampleWarning", "SweepResult", "VQGAN", "attribute_agreement", "brush_mask",
    "catnet_extractor", "codebook_usage", "data_root", "default_extractors", "extract_tokens",
    "frechet_distance", "gamma_func", "get_config", "get_device", "grade", "inception_extractor",
    "load_catnet", "load_checkpoint", "load_course_dataset", "load_dataset", "load_image_folder",
    "load_maskgit", "load_or_train_catnet", "load_vqgan", "make_masks", "masked_l1", "masked_psnr",
    "masked_token_accuracy", "mirror_labels", "mvtm_loss", "pixel_to_token_mask", "render_cat",
    "render_cats", "run_dir", "runs_root", "save_checkpoint", "seed_everything", "sweep",
    "toy_cats", "train_catnet", "train_mvtm", "train_vqgan",
]
