"""Bad input to the training loops: each is refused with what is wrong and what to do.

(The other bad inputs of the lab are tested beside their code: data folders and masks in
test_loaders.py, checkpoints in test_checkpoint.py, decoding arguments in test_maskgit.py,
config values in test_config.py, notebook parameters in test_params.py, a NaN in stage 2
in test_train.py.)
"""

import pytest
import torch

import labkit.lab.training as train_module
from labkit import get_config
from labkit.lab.training import train_mvtm, train_vqgan
from labkit.core.vqgan import VQGAN
from labkit.lab.run import RunOptions

CFG = get_config("smoke", vq_steps=15)


def images(n=8, size=CFG.image_size):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_infinite_loss_in_stage_1_stops_with_the_step_and_keeps_the_last_good_checkpoint(
        tmp_path, monkeypatch):
    calls = {"n": 0}
    original = VQGAN.forward

    def forward_turning_inf(self, x):
        calls["n"] += 1
        x_rec, indices, commit = original(self, x)
        return x_rec, indices, commit * float("inf") if calls["n"] == 12 else commit

    monkeypatch.setattr(VQGAN, "forward", forward_turning_inf)
    with pytest.raises(FloatingPointError, match=r"stage 1 .*inf.* at step 12.*step 10\) is kept"):
        train_vqgan(CFG, images(), tmp_path, options=RunOptions(progress=False))
    ckpt = train_module.load_checkpoint(tmp_path / "vqgan.safetensors")
    assert ckpt.step == 10
    assert all(torch.isfinite(t).all() for t in ckpt.tensors.values() if t.is_floating_point())


def test_images_of_another_size_say_how_to_resize(tmp_path):
    with pytest.raises(ValueError, match=r"images are 48x48 but profile 'smoke' works on 32x32: "
                                         r"load them with labkit.load_dataset"):
        train_vqgan(CFG, images(size=48), tmp_path, options=RunOptions(progress=False))


def test_no_images_or_no_tokens_are_errors(tmp_path):
    with pytest.raises(ValueError, match="no training images"):
        train_vqgan(CFG, images(n=0), tmp_path, options=RunOptions(progress=False))
    with pytest.raises(ValueError, match="no training tokens"):
        train_mvtm(CFG, VQGAN(CFG), torch.zeros(0, CFG.num_image_tokens, dtype=torch.long), tmp_path, options=RunOptions(progress=False))


@pytest.mark.parametrize("tokens, match", [
    (torch.zeros(4, CFG.num_image_tokens), "integer token grids"),
    (torch.zeros(4, 5, dtype=torch.long), rf"integer token grids \(n, {CFG.num_image_tokens}\)"),
    (torch.full((4, CFG.num_image_tokens), CFG.num_codebook_vectors), "another tokenizer"),
])
def test_tokens_that_do_not_fit_the_model_are_errors(tmp_path, tokens, match):
    with pytest.raises(ValueError, match=match):
        train_mvtm(CFG, VQGAN(CFG), tokens, tmp_path, options=RunOptions(progress=False))
