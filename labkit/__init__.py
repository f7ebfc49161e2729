"""labkit: the code behind the MaskGIT inpainting lab.

One module per concept of the lab:

    config       one config type and the profiles smoke / cpu / gpu
    toycats      the procedural toy cat faces (the built-in dataset)
    masks        brush-stroke masks and the pixel -> token mask
    datasets     cached splits, the course's dataset layout, any image folder
    vqgan        stage 1: the tokenizer
    attention    multi-head self-attention, by hand and fused
    transformer  stage 2: the bidirectional transformer
    schedules    the mask schedules gamma (a leaf module: one registry of names and formulas)
    maskgit      MVTM training forward and iterative decoding (the course's MaskGit)
    train        the training loops of both stages, read top to bottom
    run          what every training loop shares: resume, checkpoints, Ctrl-C, NaN watch, progress
    evaluate     inpaint and score: the one routine behind the pipeline's table, the sweep and 03
    checkpoint   the one checkpoint format (safetensors, atomic writes)
    metrics      masked-region L1 / PSNR, masked-token accuracy
    fid          FID (pytorch-fid's Inception, real weights only) and the Fréchet distance
    catnet       the toy cats' attribute CNN and its honest offline distance, FD_catnet
    sweep        schedules x T x t inpainting sweeps with baselines and per-image scores
    verdicts     noise estimates and verdicts (agrees / contradicts / within noise) from the numbers
    compare      notebook 03's loss comparison: short equal budgets, a buggy loss as a hypothesis
    pitfalls     the course's known student bugs as one-line subclasses (notebook 06)
    plots        figures for the notebooks; explorer: the ipywidgets decoding explorer
    notebook     the notebooks' one-line setup; progress: bars that end as one line of text
    pipeline     the main job (`python -m labkit pipeline`); notebook_runner: the series
    distributed  training on several GPUs under torchrun (DistributedDataParallel)
    params       checks of the notebooks' parameters (papermill -p)
    utils        the device and seed helpers, where runs live, atomic writes
    command      how the command lines report a mistake (one message, exit codes, Ctrl-C)
    exercises    the student edition's exercises (course TODO ids); student: the student copy;
                 grade: the grader that names a student's likely bug

``import labkit`` is quick and imports no lesson module: each name below is imported the
first time it is used (``labkit.MaskGit``, ``from labkit import get_config``). So
``python -m labkit.fid`` does not import ``labkit.fid`` twice.
"""

from __future__ import annotations

import importlib

# name -> the module that defines it
_EXPORTS = {
    "attention": ["MultiHeadAttention"],
    "checkpoint": ["CheckpointError", "load_checkpoint", "save_checkpoint"],
    "config": ["LabConfig", "get_config"],
    "maskgit": ["SCHEDULES", "DecodeTrace", "InpaintResult", "MaskGit", "gamma_func", "mvtm_loss"],
    "datasets": ["DataError", "ImageSet", "load_course_dataset", "load_dataset",
                 "load_image_folder", "toy_cats"],
    "fid": ["Extractor", "FeatureStats", "InceptionWeightsMissing", "InceptionWeightsError",
            "SmallSampleWarning", "frechet_distance", "inception_extractor"],
    "catnet": ["CatNet", "attribute_agreement", "catnet_extractor", "load_catnet",
               "load_or_train_catnet", "train_catnet"],
    "sweep": ["SweepResult", "default_extractors", "sweep"],
    "metrics": ["masked_l1", "masked_psnr", "masked_token_accuracy"],
    "train": ["extract_tokens", "load_maskgit", "load_vqgan", "train_mvtm", "train_vqgan"],
    "masks": ["brush_mask", "make_masks", "pixel_to_token_mask"],
    "toycats": ["ATTRIBUTES", "mirror_labels", "render_cat", "render_cats"],
    "transformer": ["BidirectionalTransformer"],
    "utils": ["get_device", "seed_everything", "run_dir", "runs_root", "data_root"],
    "vqgan": ["VQGAN", "codebook_usage"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__version__ = "0.1.0"
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    """Import the module that defines ``name`` on first use (PEP 562)."""
    if name in _MODULE_OF:
        value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
        globals()[name] = value               # later lookups skip this function
        return value
    raise AttributeError(f"module 'labkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
