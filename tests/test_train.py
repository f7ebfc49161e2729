"""Training loops: they learn, they are deterministic, they resume exactly, they stop safely."""

import json
import os
import re
import shutil
import signal

import numpy as np
import pytest
import torch

import labkit.lab.run as run_module
import labkit.core.train as core_train
import labkit.lab.training as train_module
from labkit import CheckpointError, MaskGit, get_config
from labkit.core.train import lr_at
from labkit.core.vqgan import VQGAN
from labkit.data.datasets import DataError
from labkit.eval.metrics import masked_l1, masked_psnr, masked_token_accuracy
from labkit.lab.checkpoint import load_checkpoint, read_header, save_checkpoint
from labkit.lab.run import (DataMismatchError, RecipeMismatchError, RunFolderError, RunOptions,
                            TrainingInterrupted, UnfinishedStageError)
from labkit.lab.training import (extract_tokens, load_maskgit, load_vqgan, run_dir, train_mvtm,
                                 train_vqgan)
from labkit.lab.utils import fingerprint, runs_root

CFG = get_config("smoke", train_mask="random", condition=())   # the course's training masks, no condition
N = CFG.num_image_tokens
K = CFG.num_codebook_vectors


def smooth_images(n=16, seed=0, size=CFG.image_size):
    """Blurry random colour fields: learnable in a few steps, unlike white noise."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    return torch.nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False)


def structured_tokens(n=8):
    """n token grids, grid i holding token 4i everywhere: a tiny model learns to copy a
    visible token in a hundred steps, so loss and accuracy move fast."""
    return (torch.arange(n) * 4 % K)[:, None].repeat(1, N)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def without_time(history):
    return [{k: v for k, v in entry.items() if k != "elapsed_s"} for entry in history]


@pytest.fixture(scope="module")
def vqgan():
    torch.manual_seed(0)
    return VQGAN(CFG).eval()


# ----------------------------------------------------------------------------- learning

def test_vqgan_reconstruction_loss_falls_on_a_fixed_batch(tmp_path):
    cfg = CFG.replace(vq_steps=40, vq_lr=5e-3)
    _, history = train_vqgan(cfg, smooth_images(8), tmp_path, RunOptions(progress=False))
    assert [entry["step"] for entry in history] == list(range(5, 41, 5))
    assert history[-1]["l1"] < 0.7 * history[0]["l1"]
    assert 0 < history[-1]["used_fraction"] <= 1


def test_mvtm_overfits_a_fixed_batch(tmp_path, vqgan):
    cfg = CFG.replace(mvtm_steps=100, log_every=10, label_smoothing=0.0, mvtm_lr=1e-2)
    _, history = train_mvtm(cfg, vqgan, structured_tokens(), tmp_path, RunOptions(progress=False))
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert history[-1]["accuracy"] > history[0]["accuracy"] + 0.4


def test_lr_schedule_warms_up_then_decays_to_a_floor():
    lrs = [lr_at(step, 1.0, warmup=10, total=110) for step in range(110)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))                 # never rises again
    assert lrs[-1] == pytest.approx(core_train.MIN_LR_RATIO, abs=1e-3)   # not zero


@pytest.mark.parametrize("floor", [0.0, 0.3, 1.0])
def test_lr_floor_is_where_the_cosine_ends(floor):
    lrs = [lr_at(step, 2.0, warmup=5, total=50, floor=floor) for step in range(50)]
    assert lrs[4] == pytest.approx(2.0)
    assert lrs[-1] == pytest.approx(2.0 * floor, abs=5e-3)
    assert min(lrs[4:]) >= 2.0 * floor - 1e-12
    if floor == 1.0:
        assert lrs[4:] == pytest.approx([2.0] * 46)                       # flat after warmup


def test_lr_hold_keeps_the_peak_then_fits_the_whole_cosine_into_the_rest():
    # warmup 10, then 100 steps: 60 at the peak, a 40-step cosine from 1.0 down to 0.1
    lrs = [lr_at(step, 1.0, warmup=10, total=110, floor=0.1, hold=0.6) for step in range(110)]
    assert lrs[:10] == [lr_at(step, 1.0, warmup=10, total=110, floor=0.1) for step in range(10)]
    assert lrs[9:70] == pytest.approx([1.0] * 61)                          # the plateau
    assert lrs[70] == pytest.approx(1.0) and lrs[71] < 1.0                 # the cosine starts
    assert all(a >= b for a, b in zip(lrs[70:], lrs[71:]))
    assert lrs[-1] == pytest.approx(0.1, abs=2e-3)                         # and still ends at the floor
    assert lrs[90] == pytest.approx(0.55)                                  # halfway down at mid-decay
    assert lr_at(50, 1.0, 10, 110, 0.1, hold=0.0) == lr_at(50, 1.0, 10, 110, 0.1)   # 0: no plateau


def test_the_transformer_follows_the_configs_lr_floor(tmp_path, monkeypatch):
    seen = []

    def recording(step, peak, warmup, total, floor=core_train.MIN_LR_RATIO, hold=0.0):
        seen.append((floor, hold))
        return lr_at(step, peak, warmup, total, floor, hold)
    monkeypatch.setattr(core_train, "lr_at", recording)
    cfg = CFG.replace(mvtm_steps=2, mvtm_lr_floor=0.0, mvtm_lr_hold=0.5)
    train_mvtm(cfg, VQGAN(cfg), structured_tokens(), tmp_path, RunOptions(progress=False))
    assert seen == [(0.0, 0.5), (0.0, 0.5)]


def test_weight_decay_only_on_linear_and_conv_weights():
    model = MaskGit(CFG).transformer
    decayed, plain = core_train.make_optimizer(model, 1e-3, CFG, torch.device("cpu")).param_groups
    assert decayed["weight_decay"] == CFG.weight_decay and plain["weight_decay"] == 0
    plain_ids = {id(p) for p in plain["params"]}
    assert id(model.tok_emb.weight) in plain_ids and id(model.pos_emb) in plain_ids
    assert id(model.blocks[0].ln1.weight) in plain_ids and id(model.bias) in plain_ids
    assert id(model.blocks[0].attn.q_linear.weight) not in plain_ids


# ----------------------------------------------------------------------------- determinism

def test_same_seed_same_results(tmp_path, vqgan):
    cfg = CFG.replace(mvtm_steps=12)
    tokens = structured_tokens()
    a, history_a = train_mvtm(cfg, vqgan, tokens, tmp_path / "a", RunOptions(progress=False))
    b, history_b = train_mvtm(cfg, vqgan, tokens, tmp_path / "b", RunOptions(progress=False))
    c, _ = train_mvtm(cfg.replace(seed=1), vqgan, tokens, tmp_path / "c", RunOptions(progress=False))
    assert same_weights(a, b) and without_time(history_a) == without_time(history_b)
    assert not same_weights(a, c)


@pytest.mark.parametrize("stage", ["vqgan", "mvtm"])
def test_stop_and_resume_equals_an_uninterrupted_run(tmp_path, vqgan, stage):
    # stop at step 13: not a checkpoint step (ckpt_every=10) nor a log step (log_every=5)
    if stage == "vqgan":
        cfg = CFG.replace(vq_steps=22)
        run = lambda folder, **kw: train_vqgan(cfg, smooth_images(), folder,  # noqa: E731
                                               RunOptions(progress=False, **kw))
    else:
        cfg = CFG.replace(mvtm_steps=22, dropout=0.1)           # dropout: the global RNG matters too
        run = lambda folder, **kw: train_mvtm(cfg, vqgan, structured_tokens(), folder,  # noqa: E731
                                              RunOptions(progress=False, **kw), val_tokens=structured_tokens(4))
    full, full_history = run(tmp_path / "full")
    _, part_history = run(tmp_path / "resumed", stop_after=13)
    assert part_history[-1]["step"] == 10
    torch.manual_seed(1234)                                     # a resumed run must not depend on it
    resumed, resumed_history = run(tmp_path / "resumed")
    assert same_weights(full, resumed)
    assert without_time(full_history) == without_time(resumed_history)


def press_ctrl_c(monkeypatch, at_step, times=1):
    """Press Ctrl-C ``times`` times while stage 2 runs its (0-based) step ``at_step``."""
    original = core_train.lr_at

    def lr_with_ctrl_c(step, *args):
        if step == at_step:
            for _ in range(times):
                signal.raise_signal(signal.SIGINT)
        return original(step, *args)

    monkeypatch.setattr(core_train, "lr_at", lr_with_ctrl_c)
    return original


def test_keyboard_interrupt_saves_a_checkpoint_that_resumes_exactly(tmp_path, vqgan, monkeypatch):
    cfg = CFG.replace(mvtm_steps=20)
    tokens = structured_tokens()
    full, _ = train_mvtm(cfg, vqgan, tokens, tmp_path / "full", RunOptions(progress=False))

    original = press_ctrl_c(monkeypatch, at_step=6)      # during the 7th step
    handler_before = signal.getsignal(signal.SIGINT)   # SIG_IGN when pytest runs in the background
    with pytest.raises(TrainingInterrupted) as stopped:
        train_mvtm(cfg, vqgan, tokens, tmp_path / "stopped", RunOptions(progress=False))
    monkeypatch.setattr(core_train, "lr_at", original)
    path = tmp_path / "stopped" / "mvtm.safetensors"
    assert isinstance(stopped.value, KeyboardInterrupt)                     # Run All stops
    assert (stopped.value.step, stopped.value.total, stopped.value.path) == (7, 20, path)
    assert str(stopped.value) == (f"interrupted at step 7 of 20; checkpoint saved at {path}; "
                                  "run the same command again to resume")
    assert stopped.value._render_traceback_() == [                         # what Jupyter shows
        f"Training interrupted at step 7 of 20; checkpoint saved at {path}.",
        "Run the same cell again to resume."]
    assert json.loads((tmp_path / "stopped" / "mvtm.json").read_text())["step"] == 7  # finished step 7
    assert signal.getsignal(signal.SIGINT) is handler_before                            # handler restored
    resumed, _ = train_mvtm(cfg, vqgan, tokens, tmp_path / "stopped", RunOptions(progress=False))
    assert same_weights(full, resumed)


def test_a_second_ctrl_c_stops_at_once_without_saving(tmp_path, vqgan, monkeypatch):
    press_ctrl_c(monkeypatch, at_step=6, times=2)
    with pytest.raises(KeyboardInterrupt) as stopped:
        train_mvtm(CFG.replace(mvtm_steps=20), vqgan, structured_tokens(), tmp_path, RunOptions(progress=False))
    assert type(stopped.value) is KeyboardInterrupt
    assert not (tmp_path / "mvtm.safetensors").exists()         # first checkpoint due at step 10


def test_finished_checkpoint_is_loaded_without_training(tmp_path, vqgan, monkeypatch):
    cfg = CFG.replace(mvtm_steps=10)
    first, history = train_mvtm(cfg, vqgan, structured_tokens(), tmp_path, RunOptions(progress=False))

    def no_training(*args):
        raise AssertionError("a finished run must not train again")

    monkeypatch.setattr(core_train, "lr_at", no_training)
    again, history_again = train_mvtm(cfg, vqgan, structured_tokens(), tmp_path, RunOptions(progress=False))
    assert same_weights(first, again) and history_again == history
    assert not again.training


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, vqgan, nan_loss_at):
    cfg = CFG.replace(mvtm_steps=20)
    nan_loss_at(13)
    with pytest.raises(FloatingPointError, match=r"at step 13.*step 10\) is kept"):
        train_mvtm(cfg, vqgan, structured_tokens(), tmp_path, RunOptions(progress=False))
    ckpt = load_checkpoint(tmp_path / "mvtm.safetensors")
    assert ckpt.step == 10
    assert all(torch.isfinite(t).all() for t in ckpt.tensors.values() if t.is_floating_point())


def test_gpu_style_loop_reads_back_only_at_log_steps_and_still_stops_on_nan(
        tmp_path, vqgan, monkeypatch, nan_loss_at):
    """On a GPU the loop reads the loss back only at log and checkpoint steps. Forced onto
    that path on the CPU, it must train the same run and still name the first bad step."""
    cfg = CFG.replace(mvtm_steps=20)
    tokens = structured_tokens()
    eager, history = train_mvtm(cfg, vqgan, tokens, tmp_path / "every", RunOptions(progress=False))
    monkeypatch.setattr(run_module, "_sync_every_step", lambda device: False)
    deferred, history_deferred = train_mvtm(cfg, vqgan, tokens, tmp_path / "deferred", RunOptions(progress=False))
    assert same_weights(eager, deferred)
    assert without_time(history) == without_time(history_deferred)

    calls = nan_loss_at(13)
    with pytest.raises(FloatingPointError, match=r"nan .*at step 13.*step 10\) is kept"):
        train_mvtm(cfg, vqgan, tokens, tmp_path / "nan", RunOptions(progress=False))
    assert calls["n"] == 15          # found at the next log step (log_every = 5), not later
    ckpt = load_checkpoint(tmp_path / "nan" / "mvtm.safetensors")
    assert ckpt.step == 10


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("clang++")),
                    reason="torch.compile on the CPU needs a C++ compiler")
def test_compiled_training_matches_eager_and_saves_the_plain_weights(tmp_path, vqgan):
    cfg = CFG.replace(mvtm_steps=10)
    tokens = structured_tokens()
    eager, history = train_mvtm(cfg, vqgan, tokens, tmp_path / "eager", RunOptions(progress=False, compile=False))
    compiled, history_compiled = train_mvtm(cfg, vqgan, tokens, tmp_path / "compiled", RunOptions(progress=False, compile=True))
    for a, b in zip(without_time(history), without_time(history_compiled)):
        assert a.keys() == b.keys()
        assert all(a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-5) for key in a)
    for (key, a), (key_b, b) in zip(eager.state_dict().items(), compiled.state_dict().items()):
        assert key == key_b and "_orig_mod" not in key
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    # the checkpoint loads into a plain MaskGit and holds what training returned
    ckpt = load_checkpoint(tmp_path / "compiled" / "mvtm.safetensors")
    plain = MaskGit(cfg, vqgan)
    ckpt.load_model("transformer", plain.transformer)
    assert same_weights(plain.transformer, compiled.transformer)


def test_a_failing_compiler_names_the_way_out_but_later_errors_keep_their_own(tmp_path, vqgan, monkeypatch):
    calls = {"n": 0}

    def compile_failing_at(failing_call):
        class FakeCompiled(torch.nn.Module):     # like torch.compile's OptimizedModule
            def __init__(self, module):
                super().__init__()
                self.module = module

            def forward(self, *a, **k):
                calls["n"] += 1
                if calls["n"] == failing_call:
                    raise RuntimeError("no C++ compiler found")
                return self.module(*a, **k)

        def fake_compile(module, *args, **kwargs):
            return FakeCompiled(module)
        return fake_compile

    monkeypatch.setattr(torch, "compile", compile_failing_at(1))
    with pytest.raises(RuntimeError, match=r"under torch.compile failed \(RuntimeError: no C\+\+ "
                                           r"compiler found\).*compile=False.*--no-compile"):
        train_mvtm(CFG.replace(mvtm_steps=5), vqgan, structured_tokens(), tmp_path / "a", RunOptions(progress=False, compile=True))

    calls["n"] = 0
    monkeypatch.setattr(torch, "compile", compile_failing_at(3))
    with pytest.raises(RuntimeError, match=r"^no C\+\+ compiler found$"):
        train_mvtm(CFG.replace(mvtm_steps=5), vqgan, structured_tokens(), tmp_path / "b", RunOptions(progress=False, compile=True))


def test_checkpoint_from_another_device_resumes_with_fresh_random_streams(tmp_path, vqgan):
    """A GPU run saves its batch generator as "batch_cuda"; a CPU run finds no "batch"
    stream to restore. It must warn and go on from the saved weights, not crash."""
    from safetensors.torch import load_file, save_file

    cfg = CFG.replace(mvtm_steps=20)
    tokens = structured_tokens()
    train_mvtm(cfg, vqgan, tokens, tmp_path, RunOptions(progress=False, stop_after=10))
    path = tmp_path / "mvtm.safetensors"
    with train_module.safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(path)
    tensors["rng.batch_cuda"] = tensors.pop("rng.batch")      # as a GPU run names it
    save_file(tensors, path, metadata=metadata)
    with pytest.warns(UserWarning, match=r"another kind of device.*\['batch'\].*step 10"):
        maskgit, history = train_mvtm(cfg, vqgan, tokens, tmp_path, RunOptions(progress=False))
    assert history[-1]["step"] == 20
    assert all(torch.isfinite(p).all() for p in maskgit.parameters())


def test_checkpoint_of_another_config_names_the_fields(tmp_path):
    train_vqgan(CFG.replace(vq_steps=5), smooth_images(), tmp_path, RunOptions(progress=False))
    with pytest.raises(CheckpointError, match="latent_dim: yours 8 vs checkpoint 16"):
        train_vqgan(CFG.replace(vq_steps=5, latent_dim=8), smooth_images(), tmp_path, RunOptions(progress=False))


def test_a_run_of_another_training_recipe_is_refused_not_reused(tmp_path, vqgan):
    """A finished checkpoint is not handed back, nor an unfinished one resumed, for a config that
    trains differently (here the training masks, the rate): the model would not be what was asked."""
    cfg = CFG.replace(mvtm_steps=6, train_mask="random")
    tokens = structured_tokens()
    train_mvtm(cfg, vqgan, tokens, tmp_path / "done", RunOptions(progress=False))
    train_mvtm(cfg, vqgan, tokens, tmp_path / "half", RunOptions(progress=False, stop_after=3))
    for folder, verb in (("done", "reusing"), ("half", "resuming")):
        with pytest.raises(RecipeMismatchError) as refused:
            train_mvtm(cfg.replace(train_mask="holes", mvtm_lr=1e-3), vqgan, tokens, tmp_path / folder, RunOptions(progress=False))
        message = str(refused.value)
        assert isinstance(refused.value, CheckpointError)
        assert "train_mask: yours 'holes' vs checkpoint 'random'" in message
        assert "mvtm_lr: yours 0.001 vs checkpoint 0.002" in message
        assert verb in message and "--fresh" in message and "--runs" in message
    assert load_checkpoint(tmp_path / "half" / "mvtm.safetensors").step == 3      # nothing lost
    _, history = train_mvtm(cfg.replace(train_mask="holes"), vqgan, tokens, tmp_path / "half", RunOptions(progress=False, resume=False))
    assert history[-1]["step"] == 6                                               # the way out works
    # decoding fields are not part of the recipe: the same model serves every schedule and T
    _, history = train_mvtm(cfg.replace(gamma_type="linear", total_iter=3), vqgan, tokens, tmp_path / "done", RunOptions(progress=False))
    assert history[-1]["step"] == 6


def test_the_tokenizer_of_a_run_folder_serves_every_stage_2_seed(tmp_path):
    """Notebook 02's seed trains its own transformer on the folder's tokenizer; the tokenizer's
    own recipe (its rate, steps...) still has to match."""
    cfg = CFG.replace(vq_steps=4)
    first, _ = train_vqgan(cfg, smooth_images(), tmp_path, RunOptions(progress=False))
    again, _ = train_vqgan(cfg.replace(seed=1), smooth_images(), tmp_path, RunOptions(progress=False))
    assert same_weights(first, again)
    with pytest.raises(RecipeMismatchError, match="vq_lr: yours 0.001 vs checkpoint 0.002"):
        train_vqgan(cfg.replace(vq_lr=1e-3), smooth_images(), tmp_path, RunOptions(progress=False))


# ----------------------------------------------------------------------------- provenance

def test_resuming_or_reusing_a_run_with_other_data_is_refused(tmp_path):
    cfg = CFG.replace(vq_steps=10)
    train_vqgan(cfg, smooth_images(), tmp_path / "a", RunOptions(progress=False, stop_after=5, data_source="cats A"))
    train_vqgan(cfg, smooth_images(), tmp_path / "b", RunOptions(progress=False, data_source="cats A"))
    saved = load_checkpoint(tmp_path / "a" / "vqgan.safetensors").extra["data"]
    assert saved == {"fingerprint": fingerprint(smooth_images()), "source": "cats A"}
    for folder in ("a", "b"):                                  # unfinished, then finished
        with pytest.raises(DataMismatchError) as refused:
            train_vqgan(cfg, smooth_images(seed=1), tmp_path / folder, RunOptions(progress=False, data_source="cats B"))
        message = str(refused.value)
        assert isinstance(refused.value, CheckpointError)
        assert f"cats A (fingerprint {saved['fingerprint']})" in message
        assert f"cats B (fingerprint {fingerprint(smooth_images(seed=1))})" in message
        assert "--runs" in message and "--fresh" in message and "resume=False" in message
    assert load_checkpoint(tmp_path / "a" / "vqgan.safetensors").step == 5     # nothing lost
    _, history = train_vqgan(cfg, smooth_images(seed=1), tmp_path / "a", RunOptions(progress=False, resume=False))
    assert history[-1]["step"] == 10                                          # the way out works


def test_stage_two_refuses_other_tokens(tmp_path, vqgan):
    cfg = CFG.replace(mvtm_steps=10)
    train_mvtm(cfg, vqgan, structured_tokens(), tmp_path, RunOptions(progress=False, stop_after=5))
    other = structured_tokens().roll(1, dims=0)
    with pytest.raises(DataMismatchError, match=r"8 token grids \(fingerprint "):
        train_mvtm(cfg, vqgan, other, tmp_path, RunOptions(progress=False))


def test_checkpoints_without_provenance_are_accepted(tmp_path):
    """Checkpoints written before provenance was recorded: unknown data, resumed as before."""
    from safetensors.torch import load_file, save_file

    cfg = CFG.replace(vq_steps=10)
    train_vqgan(cfg, smooth_images(), tmp_path, RunOptions(progress=False, stop_after=5))
    path = tmp_path / "vqgan.safetensors"
    metadata = read_header(path)
    extra = json.loads(metadata["extra"])
    del extra["data"], extra["total"]
    save_file(load_file(path), path, metadata={**metadata, "extra": json.dumps(extra)})
    assert load_vqgan(tmp_path, cfg).trained_steps is None                   # unknown: accepted
    _, history = train_vqgan(cfg, smooth_images(seed=1), tmp_path, RunOptions(progress=False))
    assert history[-1]["step"] == 10


def test_unfinished_stages_are_refused_naming_the_step(tmp_path):
    cfg = CFG.replace(vq_steps=10, mvtm_steps=10)
    stopped, _ = train_vqgan(cfg, smooth_images(), tmp_path, RunOptions(progress=False, stop_after=3))
    assert stopped.trained_steps == (3, 10)
    with pytest.raises(UnfinishedStageError, match=r"stopped at step 3 of 10.*train-tokenizer"):
        load_vqgan(tmp_path, cfg)
    assert load_vqgan(tmp_path, cfg, allow_unfinished=True).trained_steps == (3, 10)
    tokens = extract_tokens(stopped, smooth_images(), cfg)
    with pytest.raises(UnfinishedStageError, match=r"tokenizer is unfinished.*step 3 of 10"):
        train_mvtm(cfg, stopped, tokens, tmp_path, RunOptions(progress=False))

    vqgan, _ = train_vqgan(cfg, smooth_images(), tmp_path, RunOptions(progress=False))   # resumes to the end
    assert vqgan.trained_steps == (10, 10) and load_vqgan(tmp_path, cfg).trained_steps == (10, 10)
    train_mvtm(cfg, vqgan, extract_tokens(vqgan, smooth_images(), cfg), tmp_path, RunOptions(progress=False, stop_after=4))
    with pytest.raises(UnfinishedStageError, match=r"mvtm.safetensors is unfinished.*step 4 of 10"):
        load_maskgit(tmp_path, cfg)
    assert isinstance(load_maskgit(tmp_path, cfg, allow_unfinished=True), MaskGit)


# ----------------------------------------------------------------------------- run folder

def refuse_training(monkeypatch):
    def no_training(*args):
        raise AssertionError("training started before the run folder was checked")
    monkeypatch.setattr(core_train, "lr_at", no_training)


def test_a_run_folder_that_is_a_file_is_refused_before_training(tmp_path, monkeypatch):
    refuse_training(monkeypatch)
    runs = tmp_path / "runs"
    runs.write_text("not a folder")
    with pytest.raises(RunFolderError, match=rf"run folder {re.escape(str(runs))} is a file.*--runs"):
        train_vqgan(CFG, smooth_images(), runs, RunOptions(progress=False))
    with pytest.raises(RunFolderError, match=rf"{re.escape(str(runs / 'smoke'))} \(Not a directory\)"):
        train_vqgan(CFG, smooth_images(), runs / "smoke", RunOptions(progress=False))


def test_a_read_only_run_folder_is_refused_before_training(tmp_path, monkeypatch):
    refuse_training(monkeypatch)
    folder = tmp_path / "runs"
    folder.mkdir()
    folder.chmod(0o500)
    if os.geteuid() == 0:               # root writes anyway: fail the probe as the kernel would

        def permission_denied(*args, **kwargs):
            raise PermissionError(13, "Permission denied")
        monkeypatch.setattr(run_module.tempfile, "TemporaryFile", permission_denied)
    try:
        with pytest.raises(RunFolderError, match=rf"to the run folder {re.escape(str(folder))} "
                                                 r"\(Permission denied\): make it writable"):
            train_vqgan(CFG, smooth_images(), folder, RunOptions(progress=False))
    finally:
        folder.chmod(0o700)


# ----------------------------------------------------------------------------- tokens and loading

def test_token_cache_is_reused_and_invalidated(tmp_path, vqgan, monkeypatch):
    images, cache = smooth_images(6), tmp_path / "tokens.safetensors"
    calls = {"n": 0}
    original = VQGAN.encode

    def counting_encode(self, x):
        calls["n"] += 1
        return original(self, x)

    monkeypatch.setattr(VQGAN, "encode", counting_encode)
    tokens = extract_tokens(vqgan, images, CFG, cache)
    assert tokens.shape == (6, N) and tokens.dtype == torch.long
    assert calls["n"] == 1
    assert torch.equal(extract_tokens(vqgan, images, CFG, cache), tokens) and calls["n"] == 1

    torch.manual_seed(5)
    retrained = VQGAN(CFG).eval()                   # a new tokenizer: the cache is stale
    new_tokens = extract_tokens(retrained, images, CFG, cache)
    assert calls["n"] == 2
    assert torch.equal(new_tokens, retrained.encode(images)[1].flatten(1))
    extract_tokens(retrained, smooth_images(6, seed=1), CFG, cache)    # other data: stale too
    assert calls["n"] == 4


@pytest.mark.parametrize("damage", ["ids", "count", "bytes"])
def test_a_token_cache_that_does_not_hold_what_it_says_is_encoded_again(tmp_path, vqgan, damage):
    from safetensors.torch import load_file, save_file

    images, cache = smooth_images(6), tmp_path / "tokens.safetensors"
    tokens = extract_tokens(vqgan, images, CFG, cache)
    keys = read_header(cache)
    if damage == "bytes":                          # flipped bits in the tensor data
        data = bytearray(cache.read_bytes())
        data[-8:] = b"\xff" * 8
        cache.write_bytes(bytes(data))
        match = r"tokens\.safetensors is damaged: it holds torch.int64 \(6, 64\), ids -1\.\.\d+, not the 6"
    else:
        stored = load_file(cache)["tokens"]
        stored = stored + K if damage == "ids" else stored[:4]
        save_file({"tokens": stored.contiguous()}, str(cache), metadata=keys)
        match = (rf"is damaged: it holds torch.int64 \(6, 64\), ids {K}\.\.\d+, not the 6 grids of {N} ids in "
                 rf"\[0, {K}\) its keys say; encoding the images again" if damage == "ids" else
                 r"is damaged: it holds torch.int64 \(4, 64\), ids \d+\.\.\d+, not the 6 grids")
    with pytest.warns(UserWarning, match=match):
        again = extract_tokens(vqgan, images, CFG, cache)
    assert torch.equal(again, tokens)
    assert torch.equal(extract_tokens(vqgan, images, CFG, cache), tokens)      # rewritten, read back


def test_inpainting_is_never_scored_against_the_masked_images_themselves(tmp_path):
    from labkit.data.datasets import ImageSet
    from labkit.lab.pipeline import evaluate_inpainting

    images = np.zeros((2, CFG.image_size, CFG.image_size, 3), np.uint8)
    masks = np.ones((2, CFG.image_size, CFG.image_size), bool)
    test = ImageSet(images, masks=masks, source="course:test (MASKED images, no ground truth found in x)",
                    ground_truth=False)
    with pytest.raises(DataError, match="no ground truth to score the inpainting against"):
        evaluate_inpainting(CFG, MaskGit(CFG), test, tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_loaders_explain_what_to_run_when_nothing_is_trained(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"vqgan.safetensors: run notebooks/00_data_and_tokenizer"):
        load_vqgan(tmp_path, CFG)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "vqgan.safetensors", config=CFG,
                                 models={"vqgan": VQGAN(CFG)}, step=0)
    with pytest.raises(FileNotFoundError, match=r"python -m labkit train-mvtm --profile smoke"):
        load_maskgit(tmp_path, CFG)


def test_stage_two_refuses_the_tokens_of_another_tokenizer(tmp_path, vqgan):
    cfg = CFG.replace(mvtm_steps=5)
    save_checkpoint(tmp_path / "vqgan.safetensors", config=cfg,
                                 models={"vqgan": vqgan}, step=0)
    train_mvtm(cfg, vqgan, structured_tokens(), tmp_path, RunOptions(progress=False))
    assert isinstance(load_maskgit(tmp_path, cfg), MaskGit)
    torch.manual_seed(7)
    save_checkpoint(tmp_path / "vqgan.safetensors", config=cfg,
                                 models={"vqgan": VQGAN(cfg)}, step=0)      # stage 1 retrained
    with pytest.raises(CheckpointError, match="another tokenizer"):
        load_maskgit(tmp_path, cfg)


def test_run_dir_is_per_profile():
    assert run_dir(CFG) == runs_root() / "smoke"
    assert run_dir(get_config("cpu"), "elsewhere").as_posix() == "elsewhere/cpu"


# ----------------------------------------------------------------------------- metrics

def test_masked_metrics_on_known_values():
    target = torch.zeros(2, 3, 4, 4)
    pred = torch.zeros(2, 3, 4, 4)
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[:, :2] = True                       # top half missing
    pred[0, :, :2] = 0.5                     # image 0: error 0.5 in the hole...
    pred[0, :, 2:] = 1.0                     # ...and a large error outside it, which is ignored
    pred[1, :, :1] = 0.1                     # image 1: error 0.1 on half of the hole
    assert torch.allclose(masked_l1(pred, target, mask), torch.tensor([0.5, 0.05]))
    psnr = masked_psnr(pred, target, mask)
    assert psnr[0] == pytest.approx(10 * torch.log10(torch.tensor(1 / 0.25)).item())
    assert psnr[1] == pytest.approx(10 * torch.log10(torch.tensor(1 / 0.005)).item(), rel=1e-5)
    assert torch.isinf(masked_psnr(target, target, mask)).all()
    assert torch.isnan(masked_l1(pred, target, torch.zeros_like(mask))).all()   # empty hole


def test_masked_token_accuracy_counts_masked_positions_only():
    z = torch.tensor([[0, 1, 2, 3]])
    logits = torch.nn.functional.one_hot(torch.tensor([[0, 1, 0, 0]]), 4).float()
    mask = torch.tensor([[False, True, True, False]])
    assert masked_token_accuracy(logits, z, mask) == 0.5


# ----------------------------------------------------------------------------- end to end

def test_tiny_pipeline_end_to_end(tmp_path, capsys):
    from labkit.lab.pipeline import ROWS, run_pipeline

    cfg = CFG.replace(vq_steps=10, mvtm_steps=10)
    summary = run_pipeline(cfg, tmp_path / "runs", tmp_path / "data", options=RunOptions(progress=False))
    out = tmp_path / "runs" / "smoke"
    for name in ("vqgan.safetensors", "mvtm.safetensors", "inpaint_grid.png", "reconstructions.png",
                 "summary.json", "tokens-train.safetensors"):
        assert (out / name).is_file(), name
    assert json.loads((out / "summary.json").read_text())["inpainting"]["rows"].keys() == ROWS.keys()
    assert summary["stage1"]["steps"] == 10 and summary["stage2"]["seconds"] > 0
    assert summary["inpainting"]["n_images"] == CFG.n_test
    assert "MaskGIT inpainting (composite)" in capsys.readouterr().out
    rows = summary["inpainting"]["rows"]
    # composite and raw agree inside the hole; outside it the composite is the original
    assert rows["maskgit"]["hole_l1"] == pytest.approx(rows["maskgit_raw"]["hole_l1"])
    assert rows["maskgit"]["image_l1"] < rows["maskgit_raw"]["image_l1"]

    from labkit.data.datasets import toy_cats
    test = toy_cats(cfg, "test", tmp_path / "data", progress=False)
    images, masks = test.tensors(range(4)), test.mask_tensors(range(4))
    maskgit = load_maskgit(out, cfg)
    result = maskgit.inpaint(images, masks, maskgit.decode_settings(total_iter=4), torch.Generator().manual_seed(0))
    assert result.images.shape == images.shape and result.raw_steps.shape == (4, *images.shape)
    assert torch.equal(result.images[~masks.expand_as(images)], images[~masks.expand_as(images)])
    _, z_masked = maskgit.encode_to_z(result.masked_input)
    known = ~result.trace.initial_mask
    assert torch.equal(result.trace.predictions[-1][known], z_masked[known])   # known tokens kept
    assert not result.trace.still_masked[-1].any()                           # all revealed at T


@pytest.mark.parametrize("flag, expected", [([], None), (["--compile"], True), (["--no-compile"], False)])
def test_command_line_passes_the_compile_choice_to_stage_2(monkeypatch, flag, expected):
    import labkit.lab.cli as cli

    seen = {}
    monkeypatch.setattr(cli, "prepare_data", lambda *args: {})
    monkeypatch.setattr(cli, "load_vqgan", lambda *args: None)
    monkeypatch.setattr(cli, "stage_mvtm", lambda *args: seen.setdefault("compile", args[-1].compile))
    assert cli.main(["train-mvtm", "--profile", "smoke", "--device", "cpu", *flag]) == 0
    assert seen["compile"] is expected
