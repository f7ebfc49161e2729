"""labkit: the code behind the MaskGIT inpainting lab.

One module per concept of the lab:

    config       one config type and the profiles smoke / cpu / gpu
    toycats      the procedural toy cat faces (the built-in dataset)
    masks        brush-stroke masks and the pixel -> token mask
    datasets     cached splits, the course's dataset layout, any image folder
    vqgan        stage 1: the tokenizer
    attention    multi-head self-attention, by hand and fused
    transformer  stage 2: the bidirectional transformer
    maskgit      mask schedules, MVTM training forward, iterative decoding
    train        the training loops of both stages, checkpoints and resuming
    checkpoint   the one checkpoint format (safetensors, atomic writes)
    metrics      masked-region L1 / PSNR, masked-token accuracy
    fid          FID (pytorch-fid's Inception, real weights only) and the Fréchet distance
    catnet       the toy cats' attribute CNN and its honest offline distance, FD_catnet
    sweep        schedules x T x t inpainting sweeps with baselines
    plots        figures for the notebooks; explorer: the ipywidgets decoding explorer
    pipeline     the main job (`python -m labkit pipeline`); notebook_runner: the series
    distributed  training on several GPUs under torchrun (DistributedDataParallel)
    params       checks of the notebooks' parameters (papermill -p)
    utils        the device helper and the seed helper
"""

from .attention import MultiHeadAttention
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import LabConfig, get_config
from .maskgit import SCHEDULES, DecodeTrace, InpaintResult, MaskGit, gamma_func, mvtm_loss
from .datasets import DataError, ImageSet, load_course_dataset, load_dataset, load_image_folder, toy_cats
from .fid import Extractor, FeatureStats, InceptionWeightsMissing, SmallSampleWarning, frechet_distance, inception_extractor
from .catnet import CatNet, attribute_agreement, catnet_extractor, load_catnet, load_or_train_catnet, train_catnet
from .sweep import SweepResult, default_extractors, sweep
from .metrics import masked_l1, masked_psnr, masked_token_accuracy
from .train import extract_tokens, load_maskgit, load_vqgan, run_dir, train_mvtm, train_vqgan
from .masks import brush_mask, make_masks, pixel_to_token_mask
from .toycats import ATTRIBUTES, mirror_labels, render_cat, render_cats
from .transformer import BidirectionalTransformer
from .utils import get_device, seed_everything
from .vqgan import VQGAN, codebook_usage

__version__ = "0.1.0"

__all__ = [
    "MultiHeadAttention", "CheckpointError", "load_checkpoint", "save_checkpoint",
    "LabConfig", "get_config", "SCHEDULES", "DecodeTrace", "InpaintResult", "MaskGit",
    "gamma_func", "mvtm_loss", "pixel_to_token_mask", "BidirectionalTransformer",
    "get_device", "seed_everything", "VQGAN", "codebook_usage",
    "DataError", "ImageSet", "load_course_dataset", "load_dataset", "load_image_folder", "toy_cats",
    "brush_mask", "make_masks", "ATTRIBUTES", "mirror_labels", "render_cat", "render_cats",
    "Extractor", "FeatureStats", "InceptionWeightsMissing", "SmallSampleWarning", "frechet_distance",
    "inception_extractor", "CatNet", "attribute_agreement", "catnet_extractor", "load_catnet",
    "load_or_train_catnet", "train_catnet", "SweepResult", "default_extractors", "sweep",
    "masked_l1", "masked_psnr", "masked_token_accuracy",
    "extract_tokens", "load_maskgit", "load_vqgan", "run_dir", "train_mvtm", "train_vqgan",
]
