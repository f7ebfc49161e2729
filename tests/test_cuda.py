"""The fast path on a GPU: bf16 autocast, device-side batches, deferred reads, compile.

Skipped without CUDA (the CI machine has none). ``benchmarks/gpu_check.sh`` runs these
on the device machine before the benchmark.
"""

import pytest
import torch

from labkit import MaskGit, get_config
from labkit.lab.checkpoint import load_checkpoint
from labkit.lab.training import train_mvtm
from labkit.core.train import autocast
from labkit.core.vqgan import VQGAN
from labkit.lab.run import RunOptions

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CFG = get_config("smoke", train_mask="random", condition=())   # the course's training masks, no condition
N = CFG.num_image_tokens
K = CFG.num_codebook_vectors


def structured_tokens(n=8):
    return (torch.arange(n) * 4 % K)[:, None].repeat(1, N)


@pytest.fixture(scope="module")
def vqgan():
    torch.manual_seed(0)
    return VQGAN(CFG).eval()


def test_bf16_fused_path_agrees_with_fp32_handwritten_attention_on_the_gpu():
    cfg = get_config("gpu", num_layers=2)          # course width, two layers: seconds
    torch.manual_seed(0)
    maskgit = MaskGit(cfg).cuda().eval()
    ids = torch.randint(0, cfg.num_codebook_vectors + 1, (4, cfg.num_image_tokens), device="cuda")
    with torch.no_grad():
        reference = maskgit.transformer.set_fused(False)(ids).double()
        with autocast(torch.device("cuda")):
            fast = maskgit.transformer.set_fused(True)(ids).double()
    relative = (fast - reference).norm() / reference.norm()
    assert relative < 3e-2, f"bf16 fused logits differ from fp32 by {relative:.2e}"


def test_gpu_training_learns_and_keeps_batches_and_masks_on_the_device(tmp_path, vqgan, monkeypatch):
    drawn_on = set()
    original = MaskGit.random_token_mask

    def spy(self, batch, generator=None, gamma=None):
        drawn_on.add(generator.device.type)
        return original(self, batch, generator, gamma)

    monkeypatch.setattr(MaskGit, "random_token_mask", spy)
    cfg = CFG.replace(mvtm_steps=100, log_every=10, label_smoothing=0.0, mvtm_lr=1e-2)
    maskgit, history = train_mvtm(cfg, vqgan, structured_tokens(), tmp_path, options=RunOptions(device="cuda", progress=False, compile=False))
    assert drawn_on == {"cuda"}
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert history[-1]["accuracy"] > history[0]["accuracy"] + 0.4
    ckpt = load_checkpoint(tmp_path / "mvtm.safetensors")
    assert "rng.batch_cuda" in ckpt.tensors and "rng.cuda" in ckpt.tensors


def test_gpu_run_resumes_on_the_gpu_and_continues_on_the_cpu(tmp_path, vqgan):
    cfg = CFG.replace(mvtm_steps=20)
    tokens = structured_tokens()
    whole, history = train_mvtm(cfg, vqgan, tokens, tmp_path / "whole", options=RunOptions(device="cuda", progress=False, compile=False))
    train_mvtm(cfg, vqgan, tokens, tmp_path / "split", options=RunOptions(device="cuda", progress=False, compile=False, stop_after=10))
    resumed, history_resumed = train_mvtm(cfg, vqgan, tokens, tmp_path / "split", options=RunOptions(device="cuda", progress=False, compile=False))
    # GPU kernels (embedding backward) add in any order: equal up to rounding, not bit for bit
    for a, b in zip(history, history_resumed):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3)
    for a, b in zip(whole.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)

    train_mvtm(cfg, vqgan, tokens, tmp_path / "moved", options=RunOptions(device="cuda", progress=False, compile=False, stop_after=10))
    with pytest.warns(UserWarning, match="another kind of device"):
        moved, history_moved = train_mvtm(cfg, vqgan, tokens, tmp_path / "moved", options=RunOptions(device="cpu", progress=False))
    assert history_moved[-1]["step"] == 20 and moved.device.type == "cpu"


def test_gpu_loop_still_stops_at_the_first_nan_step(tmp_path, vqgan, nan_loss_at):
    nan_loss_at(13)
    with pytest.raises(FloatingPointError, match=r"at step 13.*step 10\) is kept"):
        train_mvtm(CFG.replace(mvtm_steps=20), vqgan, structured_tokens(), tmp_path, options=RunOptions(device="cuda", progress=False, compile=False))
    assert load_checkpoint(tmp_path / "mvtm.safetensors").step == 10


def test_compiled_gpu_training_matches_eager(tmp_path, vqgan):
    cfg = CFG.replace(mvtm_steps=10)
    tokens = structured_tokens()
    eager, history = train_mvtm(cfg, vqgan, tokens, tmp_path / "eager", options=RunOptions(device="cuda", progress=False, compile=False))
    compiled, history_compiled = train_mvtm(cfg, vqgan, tokens, tmp_path / "compiled", options=RunOptions(device="cuda", progress=False, compile=True))
    for a, b in zip(history, history_compiled):
        assert a["loss"] == pytest.approx(b["loss"], rel=2e-2)
    assert all("_orig_mod" not in key for key in compiled.state_dict())
    for a, b in zip(eager.parameters(), compiled.parameters()):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-3)


def test_batched_gpu_decoding_equals_one_image_at_a_time_without_noise():
    torch.manual_seed(0)
    maskgit = MaskGit(CFG).cuda().eval()
    z = torch.randint(0, K, (6, N), device="cuda")
    mask = torch.rand(6, N, device="cuda") < 0.5
    batched = maskgit.inpaint_tokens(z, mask, maskgit.decode_settings(total_iter=4, choice_temperature=0.0))
    for i in range(6):
        single = maskgit.inpaint_tokens(z[i:i + 1], mask[i:i + 1], maskgit.decode_settings(total_iter=4, choice_temperature=0.0))
        assert torch.equal(single.predictions[:, 0], batched.predictions[:, i])
