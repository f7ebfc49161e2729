"""The one checkpoint format: exact round trips, atomic writes, clear errors on bad files."""

import errno
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from labkit import CheckpointError, get_config, load_checkpoint, save_checkpoint
from labkit.core.transformer import BidirectionalTransformer
from labkit.lab.utils import EnvironmentProblem

CFG = get_config("smoke")


def trained_state(seed=0):
    """A transformer and an AdamW that has taken two steps (so it has moments)."""
    torch.manual_seed(seed)
    model = BidirectionalTransformer(CFG)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.96))
    z = torch.randint(0, CFG.num_codebook_vectors, (4, CFG.num_image_tokens))
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(model(z).flatten(0, 1), z.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model, optimizer


def save(path, model, optimizer, generator, step=7, config=CFG):
    return save_checkpoint(path, config=config, models={"transformer": model},
                           step=step, optimizer=optimizer, generators={"batch": generator},
                           metrics=[{"step": step, "loss": 1.5}], extra={"note": "hi"})


def test_round_trip_restores_weights_optimizer_rng_and_step(tmp_path):
    model, optimizer = trained_state()
    generator = torch.Generator().manual_seed(3)
    torch.rand(5, generator=generator)                 # advance it
    path = save(tmp_path / "m.safetensors", model, optimizer, generator)
    expected_next = torch.rand(4, generator=generator)

    ckpt = load_checkpoint(path, part="transformer", config=CFG)
    fresh, fresh_opt = trained_state(seed=1)
    ckpt.load_model("transformer", fresh)
    ckpt.load_optimizer(fresh_opt)
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    for p, q in zip(optimizer.param_groups[0]["params"], fresh_opt.param_groups[0]["params"]):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(optimizer.state[p][key], fresh_opt.state[q][key])
    assert fresh_opt.param_groups[0]["betas"][1] == 0.96
    restored = torch.Generator().manual_seed(99)
    restored.set_state(ckpt.rng_state("batch"))
    assert torch.equal(torch.rand(4, generator=restored), expected_next)
    assert ckpt.step == 7 and ckpt.metrics == [{"step": 7, "loss": 1.5}] and ckpt.extra == {"note": "hi"}
    assert ckpt.config == CFG


def test_save_leaves_no_temporary_file(tmp_path):
    model, optimizer = trained_state()
    save(tmp_path / "m.safetensors", model, optimizer, torch.Generator())
    save(tmp_path / "m.safetensors", model, optimizer, torch.Generator(), step=8)   # overwrite
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors"]
    assert load_checkpoint(tmp_path / "m.safetensors").step == 8


def test_failing_save_keeps_the_old_file(tmp_path, monkeypatch):
    model, optimizer = trained_state()
    path = save(tmp_path / "m.safetensors", model, optimizer, torch.Generator(), step=5)
    before = path.read_bytes()

    def half_written(filename, data):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_bytes", half_written)
    with pytest.raises(OSError, match="disk full"):
        save(path, model, optimizer, torch.Generator(), step=6)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors"]
    assert load_checkpoint(path).step == 5


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_is_named_as_such_with_the_path_and_the_old_file_kept(tmp_path, monkeypatch, code):
    model, optimizer = trained_state()
    path = save(tmp_path / "m.safetensors", model, optimizer, torch.Generator(), step=5)
    before = path.read_bytes()

    def disk_full(filename, data):
        with open(filename, "wb") as handle:
            handle.write(data[:100])
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(Path, "write_bytes", disk_full)
    named = (rf"no space left on the disk to write {re.escape(str(path))} \({os.strerror(code)}\): "
             r"the previous m.safetensors is kept as it was. Free space")
    with pytest.raises(EnvironmentProblem, match=named):
        save(path, model, optimizer, torch.Generator(), step=6)
    with pytest.raises(EnvironmentProblem, match="nothing was written"):
        save(tmp_path / "new.safetensors", model, optimizer, torch.Generator(), step=6)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors"]


@pytest.fixture
def good_file(tmp_path):
    model, optimizer = trained_state()
    return save(tmp_path / "good.safetensors", model, optimizer, torch.Generator())


def test_truncated_file_is_a_checkpoint_error(good_file, tmp_path):
    data = good_file.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(cut)
    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(data[:5])
    with pytest.raises(CheckpointError, match="empty or truncated"):
        load_checkpoint(tiny)


def test_random_bytes_are_a_checkpoint_error(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0))
                           .to(torch.uint8).tolist()))
    with pytest.raises(CheckpointError, match="not a labkit checkpoint"):
        load_checkpoint(junk)


def test_foreign_safetensors_is_a_checkpoint_error(tmp_path):
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(3)}, str(foreign))
    with pytest.raises(CheckpointError, match="not a labkit checkpoint"):
        load_checkpoint(foreign)


def test_other_config_names_the_differing_fields(good_file):
    other = CFG.replace(dim=64, num_layers=3)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(good_file, part="transformer", config=other)
    assert "dim: yours 64 vs checkpoint 32" in str(error.value)
    assert "num_layers: yours 3 vs checkpoint 2" in str(error.value)
    # fields that do not shape the weights may differ
    assert load_checkpoint(good_file, config=CFG.replace(mvtm_lr=0.5)).step == 7


def test_wrong_part_is_a_checkpoint_error(good_file):
    with pytest.raises(CheckpointError, match="not 'vqgan'"):
        load_checkpoint(good_file, part="vqgan")


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nothing.safetensors")


def test_checkpoints_are_written_readable_like_every_other_file(good_file):
    assert good_file.stat().st_mode & 0o777 == 0o644


def _rewrite_header(good_file, path, edit):
    """A copy of ``good_file`` whose JSON header is replaced by ``edit(header)`` (bytes or JSON)."""
    data = good_file.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    new = edit(header)
    new = new if isinstance(new, bytes) else json.dumps(new).encode()
    path.write_bytes(len(new).to_bytes(8, "little") + new + data[8 + size:])
    return path


def _with_meta(**changes):
    def edit(header):
        meta = dict(header["__metadata__"])
        for key, value in changes.items():
            if value is None:
                meta.pop(key)
            else:
                meta[key] = value
        return {**header, "__metadata__": meta}
    return edit


def _with_config(**changes):
    def edit(header):
        config = {**json.loads(header["__metadata__"]["config"]), **changes}
        return _with_meta(config=json.dumps(config))(header)
    return edit


MALFORMED_HEADERS = {
    "json list": lambda header: [header],
    "json string": lambda header: "hello",
    "deep nesting": lambda header: b"[" * 100_000 + b"]" * 100_000,
    "not utf-8": lambda header: b"\xff\xfe" * 50,
    "metadata a list": lambda header: {**header, "__metadata__": ["a"]},
    "metadata numbers": lambda header: {**header, "__metadata__": {"format": 1}},
    "no part": _with_meta(part=None),
    "no config": _with_meta(config=None),
    "no step": _with_meta(step=None),
    "no format": _with_meta(format=None),
    "step not a number": _with_meta(step="seven"),
    "negative step": _with_meta(step="-1"),
    "step a unicode digit": _with_meta(step="\u0663"),            # ARABIC-INDIC DIGIT THREE
    "step a superscript": _with_meta(step="\u00b2"),              # isdigit(), but not int()
    "step 5000 digits": _with_meta(step="9" * 5000),
    "config not json": _with_meta(config="{dim: 32"),
    "config a list": _with_meta(config="[1, 2]"),
    "config nested deeply": _with_meta(config="[" * 100_000 + "]" * 100_000),
    "config unknown field": _with_config(colour="red"),
    "config dim a string": _with_config(dim="32"),
    "config channels not numbers": _with_config(vq_channels=["a", "b"]),
    "config lr a bool": _with_config(mvtm_lr=True),
    "config unknown profile": _with_config(profile="huge"),
    "metrics not json": _with_meta(metrics="[{"),
    "metrics a dict": _with_meta(metrics="{}"),
    "extra a list": _with_meta(extra="[]"),
    "optim without groups": _with_meta(optim="{}"),
    "tensor offsets wrong": lambda header: {
        **header, **{k: {**v, "data_offsets": [0, 10 ** 12]}
                     for k, v in header.items() if k != "__metadata__"}},
}


@pytest.mark.parametrize("damage", MALFORMED_HEADERS, ids=list(MALFORMED_HEADERS))
def test_every_malformed_header_is_a_checkpoint_error_naming_the_file(good_file, tmp_path, damage):
    bad = _rewrite_header(good_file, tmp_path / "bad.safetensors", MALFORMED_HEADERS[damage])
    with pytest.raises(CheckpointError, match=str(bad)):
        ckpt = load_checkpoint(bad, part="transformer", config=CFG)
        model, optimizer = trained_state()
        ckpt.load_model("transformer", model)
        ckpt.load_optimizer(optimizer)


def test_fuzz_truncation_and_random_bytes_give_only_checkpoint_errors(good_file, tmp_path):
    data = good_file.read_bytes()
    rng = np.random.default_rng(0)
    cases = [data[:len(data) * k // 16] for k in range(16)]                      # truncated
    cases += [rng.integers(0, 256, len(data), dtype=np.uint8).tobytes() for _ in range(4)]
    size = int.from_bytes(data[:8], "little")
    for _ in range(8):                                                           # header bytes
        header = bytearray(data[8:8 + size])
        for index in rng.integers(0, size, 4):
            header[index] = int(rng.integers(0, 256))
        cases.append(data[:8] + bytes(header) + data[8 + size:])
    for number, case in enumerate(cases):
        bad = tmp_path / f"fuzz{number}.safetensors"
        bad.write_bytes(case)
        try:
            ckpt = load_checkpoint(bad, part="transformer", config=CFG)
            ckpt.load_model("transformer", trained_state()[0])
        except CheckpointError as error:
            assert str(bad) in str(error), (number, error)
        else:
            # a flipped byte inside a string of the header can leave a valid checkpoint
            assert number >= 20, number


def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path):
    model, optimizer = trained_state()
    with torch.no_grad():
        model.blocks[0].mlp[0].weight[3, 1] = float("nan")
    path = save(tmp_path / "nan.safetensors", model, optimizer, torch.Generator())
    ckpt = load_checkpoint(path, part="transformer", config=CFG)
    bad = "model.transformer.blocks.0.mlp.0.weight"
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(path))}: {re.escape(bad)} holds NaN"):
        ckpt.load_model("transformer", trained_state()[0])


def test_a_folder_is_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(tmp_path)
