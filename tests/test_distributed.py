"""Training under torchrun: two CPU processes (gloo) train like one process on the whole batch."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

import labkit
from labkit import get_config
from labkit.lab import distributed
from labkit.lab.checkpoint import load_checkpoint
from labkit.lab.training import train_mvtm, train_vqgan
from labkit.core.train import lr_at, make_optimizer
from labkit.core.vqgan import VQGAN
from labkit.lab.training import build_maskgit
from labkit.lab.utils import seed_everything
from labkit.lab.run import RunOptions

# Global batches of 16: each of the two ranks computes 8 examples.
CFG = get_config("smoke", vq_steps=6, mvtm_steps=8, log_every=2, ckpt_every=100, train_mask="random", condition=())


def smooth_images(n=32):
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    return torch.nn.functional.interpolate(coarse, size=CFG.image_size, mode="bilinear",
                                           align_corners=False)


def random_tokens(n=32):
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, CFG.num_codebook_vectors, (n, CFG.num_image_tokens), generator=g)


def fixed_tokenizer():
    torch.manual_seed(0)
    return VQGAN(CFG).eval()


def train_both(run_dir, out, tag):
    """Stage 1 for 6 steps; stage 2 stopped after 3 steps, then resumed to 8 (every rank
    reloads rank 0's checkpoint). Writes this process's weights and histories under out."""
    vqgan, vq_history = train_vqgan(CFG, smooth_images(), run_dir, options=RunOptions(progress=False))
    train_mvtm(CFG, fixed_tokenizer(), random_tokens(), run_dir, options=RunOptions(progress=False, stop_after=3))
    maskgit, mvtm_history = train_mvtm(CFG, fixed_tokenizer(), random_tokens(), run_dir, options=RunOptions(progress=False))
    weights = {f"vqgan.{k}": v for k, v in vqgan.state_dict().items()}
    weights.update({f"transformer.{k}": v for k, v in maskgit.transformer.state_dict().items()})
    save_file({k: v.contiguous() for k, v in weights.items()}, str(out / f"{tag}.safetensors"))
    (out / f"{tag}.json").write_text(json.dumps({"vqgan": vq_history, "mvtm": mvtm_history}))


def _worker(rank, world_size, port, run_dir, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    assert distributed.init("cpu") == torch.device("cpu")
    try:
        train_both(run_dir, out, f"rank{rank}")
    finally:
        distributed.cleanup()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process on the global batch, and two gloo processes on halves of it."""
    root = tmp_path_factory.mktemp("ddp")
    for name in ("single", "ddp", "out"):
        (root / name).mkdir()
    train_both(root / "single", root / "out", "single")
    mp.spawn(_worker, args=(2, free_port(), root / "ddp", root / "out"), nprocs=2, join=True)
    return root


def weights(root, tag):
    return load_file(str(root / "out" / f"{tag}.safetensors"))


def histories(root, tag):
    return json.loads((root / "out" / f"{tag}.json").read_text())


def vqgan_of(tensors):
    model = VQGAN(CFG)
    model.load_state_dict({k[len("vqgan."):]: v for k, v in tensors.items() if k.startswith("vqgan.")})
    return model.eval()


def test_two_processes_train_the_tokenizer_like_one_on_the_whole_batch(runs):
    single, ddp = weights(runs, "single"), weights(runs, "rank0")
    assert single.keys() == ddp.keys()
    for key in (k for k in single if k.startswith("vqgan.")):
        # Conv biases just before a GroupNorm have a true gradient of zero: Adam turns the
        # rounding noise of the two sums into steps of up to lr each, so only those
        # parameters may drift, by at most lr per step; they do not change the output.
        torch.testing.assert_close(ddp[key], single[key], rtol=1e-4, atol=CFG.vq_lr * CFG.vq_steps, msg=key)
    torch.testing.assert_close(ddp["vqgan.quantizer.codebook"], single["vqgan.quantizer.codebook"],
                               rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(vqgan_of(ddp)(smooth_images())[0],
                                   vqgan_of(single)(smooth_images())[0], rtol=1e-4, atol=1e-4)
    one, two = histories(runs, "single")["vqgan"], histories(runs, "rank0")["vqgan"]
    assert [e["step"] for e in one] == [e["step"] for e in two]
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
    # the codebook usage is counted over the whole batch, not rank 0's half
    assert [e["used_fraction"] for e in two] == [e["used_fraction"] for e in one]


def reference_transformer() -> dict:
    """Stage 2 as two processes run it, in one process: each step the global batch is drawn as
    one process draws it, each rank's half is masked from the rank's own stream and the
    student's loss is averaged over the two halves (DDP's mean of the gradients)."""
    vqgan = fixed_tokenizer()
    tokens = random_tokens()
    seed_everything(CFG.seed)
    batch_rng = torch.Generator().manual_seed(CFG.seed)
    maskgit = build_maskgit(CFG, vqgan)
    optimizer = make_optimizer(maskgit.transformer, CFG.mvtm_lr, CFG, torch.device("cpu"))
    half = CFG.mvtm_batch_size // 2
    for step in range(CFG.mvtm_steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, CFG.mvtm_lr, CFG.warmup_steps, CFG.mvtm_steps, CFG.mvtm_lr_floor)
        index = torch.randint(0, len(tokens), (CFG.mvtm_batch_size,), generator=batch_rng)
        optimizer.zero_grad(set_to_none=True)
        for rank in (0, 1):
            stream = torch.Generator().manual_seed(distributed.rank_seed(CFG.seed, rank, step))
            logits, z, mask = maskgit.forward_tokens(tokens[index[rank * half:(rank + 1) * half]], stream)
            (maskgit.loss(logits, z, mask) / 2).backward()
        torch.nn.utils.clip_grad_norm_(maskgit.transformer.parameters(), CFG.grad_clip)
        optimizer.step()
    return maskgit.transformer.state_dict()


def test_two_processes_step_the_transformer_with_the_mean_of_their_shares(runs):
    """Each rank runs the student's mvtm_step on its half of the global batch, masked from its
    own stream; stopped after step 3 and resumed, the run equals the one-process reference."""
    ddp = weights(runs, "rank0")
    for key, value in reference_transformer().items():
        torch.testing.assert_close(ddp[f"transformer.{key}"], value, rtol=1e-4, atol=1e-5, msg=key)
    steps = [e["step"] for e in histories(runs, "rank0")["mvtm"]]
    assert steps == [e["step"] for e in histories(runs, "single")["mvtm"]] and steps[-1] == CFG.mvtm_steps


def test_all_ranks_hold_identical_weights_and_codebooks(runs):
    rank0, rank1 = weights(runs, "rank0"), weights(runs, "rank1")
    for key in rank0:            # EMA statistics are all-reduced, restarts broadcast
        assert torch.equal(rank0[key], rank1[key]), key


def test_rank0_alone_writes_the_checkpoints(runs):
    files = sorted(p.name for p in (runs / "ddp").iterdir())
    assert files == ["mvtm.json", "mvtm.safetensors", "vqgan.json", "vqgan.safetensors"]
    ckpt = load_checkpoint(runs / "ddp" / "mvtm.safetensors", part="transformer", config=CFG)
    assert ckpt.step == CFG.mvtm_steps
    rank0 = weights(runs, "rank0")
    for key, value in ckpt.state_dict("transformer").items():
        assert torch.equal(value, rank0[f"transformer.{key}"])


def test_a_batch_that_does_not_split_over_the_ranks_is_refused(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    assert distributed.shard(16) == slice(8, 16)
    with pytest.raises(ValueError, match="divisible by 2"):
        distributed.shard(15)


def test_without_torchrun_everything_is_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init() is None
    assert not distributed.is_distributed() and distributed.is_main()
    assert distributed.shard(16) == slice(0, 16)
    x = torch.arange(4.0)
    assert distributed.all_gather_cat(x) is x and distributed.all_reduce_sum(x) is x


def test_the_cli_trains_under_torchrun(tmp_path):
    """`torchrun --nproc_per_node=2 -m labkit train-tokenizer` on CPU: one checkpoint, one
    rendering of the data, no crash of the non-main rank."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(labkit.__file__).parents[1]),
                                                       os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               "--master_addr=127.0.0.1", f"--master_port={free_port()}",
               "-m", "labkit", "train-tokenizer", "--profile", "smoke", "--device", "cpu",
               "--no-progress", "--runs", str(tmp_path / "runs"), "--data", str(tmp_path / "data")]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    ckpt = load_checkpoint(tmp_path / "runs" / "smoke" / "vqgan.safetensors", part="vqgan",
                           config=get_config("smoke"))
    assert ckpt.step == get_config("smoke").vq_steps
    assert (tmp_path / "runs" / "smoke" / "reconstructions.png").is_file()
