"""The command lines as a user meets them: a mistake gets one message, never a traceback,
and loses nothing.

Each bad input runs ``python -m labkit ...`` (or ``labkit.eval.fid``, ``labkit.lab.notebook_runner``)
in a subprocess on the smoke profile, and checks the exit status, that no traceback is
printed, that the message names the offending file or value, and that the good tokenizer
checkpoint trained once for the module still loads, unchanged, afterwards.
"""

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from labkit import get_config, load_checkpoint
from labkit.lab.cli import parse_overrides
from labkit.lab.command import (EXIT_BAD_INPUT, EXIT_ENVIRONMENT, EXIT_ERROR, EXIT_INTERRUPTED,
                                EXIT_TERMINATED, run_command)
from labkit.lab.utils import get_device

ROOT = Path(__file__).resolve().parents[1]
CFG = get_config("smoke")


def labkit(*args, env=None, module="labkit", timeout=300):
    """Run ``python -m <module> args`` on the smoke profile; returns the CompletedProcess."""
    full_env = {key: value for key, value in os.environ.items() if key != "LABKIT_DEBUG"}
    full_env.update({"PYTHONPATH": str(ROOT), "LABKIT_PROFILE": "smoke", **(env or {})})
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True,
                          text=True, env=full_env, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A runs folder with a finished smoke tokenizer, and the toy-cat cache beside it."""
    root = tmp_path_factory.mktemp("cli")
    runs, data = root / "runs", root / "data"
    done = labkit("train-tokenizer", "--runs", runs, "--data", data, "--no-progress")
    assert done.returncode == 0, done.stderr
    return runs, data


def checkpoint_hash(runs) -> str:
    return hashlib.sha256((runs / "smoke" / "vqgan.safetensors").read_bytes()).hexdigest()


@pytest.fixture
def unchanged(trained):
    """After the test: the good checkpoint is still there, byte for byte, and loads."""
    runs, _ = trained
    before = checkpoint_hash(runs)
    yield
    assert checkpoint_hash(runs) == before
    assert load_checkpoint(runs / "smoke" / "vqgan.safetensors", part="vqgan", config=CFG).step == CFG.vq_steps


def assert_clean_failure(result, *named, status=EXIT_BAD_INPUT):
    err = result.stderr
    assert result.returncode == status, (result.returncode, err)
    assert "Traceback" not in err, err
    assert "error: " in err, err
    for thing in named:
        assert str(thing) in err, (thing, err)


def images_folder(path, n, size=8):
    path.mkdir(parents=True)
    rng = np.random.default_rng(n)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path / f"{i}.png")
    return path


# ----------------------------------------------------------------------------- python -m labkit

def common(trained):
    runs, data = trained
    return ["--runs", runs, "--data", data, "--no-progress"]


@pytest.mark.parametrize("args, env, named", [
    (["make-data"], {"LABKIT_PROFILE": "huge"}, ["$LABKIT_PROFILE", "'huge'", "smoke, cpu, gpu"]),
    (["train-tokenizer", "--device", "cuda"], {}, ["'cuda'", "--device cpu"]),
    (["train-tokenizer", "--device", "mps"], {}, ["'mps'", "--device cpu"]),
    (["train-tokenizer", "--set", "colour=red"], {}, ["colour", "valid fields", "mvtm_steps"]),
    (["train-tokenizer", "--set", "dim=33"], {}, ["dim=33", "num_heads=4"]),
    (["train-tokenizer", "--set", "vq_steps=many"], {}, ["vq_steps", "int"]),
    (["train-tokenizer", "--data-root", "/no/such/folder"], {}, ["/no/such/folder"]),
], ids=["unknown profile env", "device cuda", "device mps", "set unknown field", "set bad value",
        "set bad type", "bad data root"])
def test_bad_input_to_the_main_command(trained, unchanged, args, env, named):
    assert_clean_failure(labkit(*args, *common(trained), env=env), *named)


def test_runs_that_is_a_file(trained, unchanged, tmp_path):
    runs_file = tmp_path / "runs.txt"
    runs_file.write_text("not a folder")
    result = labkit("train-tokenizer", "--runs", runs_file, "--data", trained[1])
    assert_clean_failure(result, runs_file, "is a file")
    assert runs_file.read_text() == "not a folder"


def test_corrupt_checkpoint_is_named_and_left_for_the_user(trained, unchanged, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(trained[0], runs)
    bad = runs / "smoke" / "vqgan.safetensors"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    result = labkit("train-mvtm", "--runs", runs, "--data", trained[1], "--no-progress")
    assert_clean_failure(result, bad, "Delete it and train again")
    assert bad.read_bytes() == data[: len(data) // 2]             # not replaced behind the user's back


def test_checkpoint_from_another_profile_names_both(trained, unchanged, tmp_path):
    runs = tmp_path / "runs"
    (runs / "cpu").mkdir(parents=True)
    shutil.copy(trained[0] / "smoke" / "vqgan.safetensors", runs / "cpu" / "vqgan.safetensors")
    result = labkit("train-mvtm", "--profile", "cpu", "--set", "n_train=4", "--set", "n_val=2",
                    "--set", "n_test=2", "--runs", runs, "--data", tmp_path / "data", "--no-progress")
    assert_clean_failure(result, runs / "cpu" / "vqgan.safetensors", "profile 'smoke'")


def test_inpaint_without_a_tokenizer_says_which_command_to_run(trained, unchanged, tmp_path):
    result = labkit("inpaint", "--runs", tmp_path / "empty", "--data", trained[1], "--no-progress")
    assert_clean_failure(result, tmp_path / "empty" / "smoke" / "vqgan.safetensors", "train-tokenizer")


def test_debug_shows_the_traceback(trained, unchanged):
    result = labkit("train-tokenizer", "--set", "dim=33", "--debug", *common(trained))
    assert result.returncode == EXIT_BAD_INPUT
    assert "Traceback" in result.stderr and "error: dim=33" in result.stderr


def signal_training(runs, data, signum, ckpt_every=2):
    """Start a long smoke tokenizer run, send ``signum`` once it wrote its first checkpoint;
    returns (exit status, stdout, stderr)."""
    path = runs / "smoke" / "vqgan.safetensors"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LABKIT_PROFILE": "smoke"}
    process = subprocess.Popen(
        [sys.executable, "-m", "labkit", "train-tokenizer", "--set", "vq_steps=100000",
         "--set", f"ckpt_every={ckpt_every}",
         "--runs", str(runs), "--data", str(data), "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while not path.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)                           # the first checkpoint: training is under way
        assert path.exists(), "training never wrote its first checkpoint"
        process.send_signal(signum)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    return process.returncode, out, err


def test_ctrl_c_saves_a_checkpoint_and_exits_130(trained, unchanged, tmp_path):
    runs = tmp_path / "runs"
    status, out, err = signal_training(runs, trained[1], signal.SIGINT)
    assert status == EXIT_INTERRUPTED, err
    assert "Traceback" not in err and "interrupted" in (out + err)
    saved = load_checkpoint(runs / "smoke" / "vqgan.safetensors", part="vqgan")
    assert 0 < saved.step < 100000


def test_sigterm_is_handled_like_ctrl_c_and_exits_143(trained, unchanged, tmp_path):
    runs = tmp_path / "runs"
    path = runs / "smoke" / "vqgan.safetensors"
    status, out, err = signal_training(runs, trained[1], signal.SIGTERM, ckpt_every=3)
    assert status == EXIT_TERMINATED == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and "SIGTERM: stopping after this step" in out
    stopped = re.search(r"stopped by SIGTERM .* at step (\d+) of 100000; checkpoint saved at (\S+); "
                        r"run the same command again to resume", err)
    assert stopped and stopped[2] == str(path), err
    assert load_checkpoint(path, part="vqgan").step == int(stopped[1])      # the step it stopped at
    assert [p.name for p in path.parent.iterdir() if ".tmp-" in p.name] == []


def test_a_full_disk_while_saving_a_checkpoint_names_the_path_and_keeps_the_old_one(trained, unchanged,
                                                                                   tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs (the simulated full disk is in test_checkpoint.py)")
    disk = tmp_path / "disk"
    disk.mkdir()
    # room for the JSON files and a first checkpoint, not for a second copy beside it
    size = (trained[0] / "smoke" / "vqgan.safetensors").stat().st_size * 3 // 2
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        path = disk / "smoke" / "vqgan.safetensors"
        result = labkit("train-tokenizer", "--set", "ckpt_every=2", "--runs", disk, "--data", trained[1],
                        "--no-progress")
        first = load_checkpoint(path, part="vqgan").step
        assert_clean_failure(result, path, "no space left on the disk",
                             "the previous vqgan.safetensors is kept", status=EXIT_ENVIRONMENT)
        assert first == 2                                                     # the old file, intact
        assert [p.name for p in path.parent.iterdir() if ".tmp-" in p.name] == []
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_a_checkpoint_path_that_is_a_folder_is_refused_before_training(trained, unchanged, tmp_path):
    folder = tmp_path / "runs" / "smoke" / "vqgan.safetensors"
    folder.mkdir(parents=True)
    result = labkit("train-tokenizer", "--runs", tmp_path / "runs", "--data", trained[1], "--no-progress")
    assert_clean_failure(result, folder, "is a folder", "move the folder away")
    assert ".tmp-" not in result.stderr and list(folder.iterdir()) == []


def test_an_empty_runs_folder_is_refused_not_replaced_by_the_default(trained, unchanged):
    result = labkit("train-tokenizer", "--runs", "", "--data", trained[1], "--no-progress")
    assert_clean_failure(result, "the runs folder (--runs, runs_root) is an empty path")


def test_make_data_without_progress_draws_no_bars(tmp_path):
    drawn = labkit("make-data", "--data", tmp_path / "a", env={"LABKIT_PROGRESS": "text"})
    quiet = labkit("make-data", "--data", tmp_path / "b", "--no-progress", env={"LABKIT_PROGRESS": "text"})
    assert drawn.returncode == quiet.returncode == 0, (drawn.stderr, quiet.stderr)
    assert "rendering toy cats (train)" in drawn.stderr
    assert "rendering" not in quiet.stdout + quiet.stderr
    assert quiet.stdout == drawn.stdout.replace(str(tmp_path / "a"), str(tmp_path / "b"))


def course_without_ground_truth(root, size=CFG.image_size, n=3):
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 2), ("test/masked_image", n)):
        images_folder(root / split, count, size)
    (root / "test" / "mask64").mkdir()
    for k in range(n):
        mask = np.full((size, size), 255, np.uint8)
        mask[rng.integers(0, size - 8):, :size // 2] = 0               # black = missing
        Image.fromarray(mask).save(root / "test" / "mask64" / f"{k}.png")
    return root


def test_pipeline_on_a_course_folder_without_ground_truth_stops_before_training(tmp_path):
    course = course_without_ground_truth(tmp_path / "course")
    result = labkit("pipeline", "--data-root", course, "--runs", tmp_path / "runs", "--no-progress")
    assert_clean_failure(result, course / "test", "no ground truth to score")
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------- labkit.eval.fid

@pytest.fixture(scope="module")
def fid_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("fid")
    return images_folder(root / "pred", 3), images_folder(root / "gt", 3), images_folder(root / "one", 1)


def test_fid_with_a_folder_as_weights(fid_folders, unchanged, tmp_path):
    pred, gt, _ = fid_folders
    result = labkit("fid", pred, gt, "--weights", tmp_path, "--device", "cpu")
    assert_clean_failure(result, tmp_path, "is a folder")
    assert "RuntimeWarning" not in result.stderr               # runpy: labkit.eval.fid imported once


def test_fid_with_a_corrupt_weights_file(fid_folders, unchanged, tmp_path):
    pred, gt, _ = fid_folders
    weights = tmp_path / "pt_inception.pth"
    weights.write_bytes(os.urandom(2048))
    result = labkit("fid", pred, gt, "--weights", weights, "--device", "cpu")
    assert_clean_failure(result, weights, "not a readable PyTorch weights file")
    assert "weights_only" not in result.stderr


def test_fid_with_one_image_fails_before_loading_anything(fid_folders, unchanged, tmp_path):
    pred, _, one = fid_folders
    result = labkit("fid", pred, one, "--weights", tmp_path / "missing.pth")
    assert_clean_failure(result, one, "holds 1 ground-truth image")


# ----------------------------------------------------------------------------- notebook_runner

def test_notebook_runner_with_a_misspelt_parameter(unchanged, tmp_path):
    result = labkit("notebooks", "--only", "04_inpaint", "-p", "gama", "linear", "--runs-root", tmp_path)
    assert_clean_failure(result, "gama", "04_inpaint: ", "gamma")
    assert not (tmp_path / "smoke").exists()                     # stopped before any kernel


@pytest.mark.parametrize("package", ["papermill", "ipykernel"])
def test_notebook_runner_without_its_packages_gives_the_install_hint(unchanged, tmp_path, package):
    shadow = tmp_path / "shadow" / package                       # an environment without it
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(f"raise ModuleNotFoundError(\"No module named '{package}'\", "
                                        f"name='{package}')\n")
    result = labkit("notebooks", "--only", "01_attention", "--runs-root", tmp_path / "runs",
                    env={"PYTHONPATH": f"{tmp_path / 'shadow'}{os.pathsep}{ROOT}"})
    assert_clean_failure(result, f"No module named '{package}'", "pip install -e '.[lab,test]'",
                         "make setup", status=EXIT_ENVIRONMENT)
    assert "Kernel died" not in result.stderr and not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------- in-process pieces

def test_set_values_are_parsed_to_each_fields_type():
    assert parse_overrides(["mvtm_steps=200", "vq_lr=1e-3", "loss=full", "vq_channels=16,32,64",
                            "betas=0.9, 0.95"]) == {
        "mvtm_steps": 200, "vq_lr": 1e-3, "loss": "full", "vq_channels": (16, 32, 64),
        "betas": (0.9, 0.95)}
    assert get_config("smoke", **parse_overrides(["mvtm_steps=7"])).mvtm_steps == 7
    with pytest.raises(ValueError, match="choose the profile with --profile"):
        parse_overrides(["profile=gpu"])
    with pytest.raises(ValueError, match=r"vq_lr='fast': vq_lr takes a value of type float"):
        parse_overrides(["vq_lr=fast"])
    with pytest.raises(ValueError, match="write KEY=VALUE"):
        parse_overrides(["vq_steps"])
    with pytest.raises(ValueError, match=r"vq_channels='16,x': .* tuple\[int, \.\.\.\]"):
        parse_overrides(["vq_channels=16,x"])


@pytest.mark.parametrize("device", ["tpu", "banana", "cuda:7"])
def test_devices_this_machine_lacks_are_refused_with_the_choices(device):
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    with pytest.raises(ValueError, match=rf"'{device}'.*(cpu|--device cpu)"):
        get_device(device)


def test_labkit_debug_in_the_environment_shows_the_traceback(monkeypatch, capsys):
    def mistaken(argv):
        raise ValueError("dim=33 is not divisible by num_heads=4")
    monkeypatch.setenv("LABKIT_DEBUG", "1")
    assert run_command(mistaken, []) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "Traceback" in err and err.endswith("error: dim=33 is not divisible by num_heads=4\n")


def test_an_unexpected_error_gets_one_line_and_the_debug_hint(monkeypatch, capsys):
    monkeypatch.delenv("LABKIT_DEBUG", raising=False)
    def broken(argv):
        raise TypeError("unsupported operand\nsecond line")
    assert run_command(broken, []) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err == ("error: unexpected TypeError: unsupported operand\n"
                   "run with --debug (or LABKIT_DEBUG=1) for the traceback\n")


def test_training_interrupted_prints_its_own_message(monkeypatch, capsys):
    monkeypatch.delenv("LABKIT_DEBUG", raising=False)
    class TrainingInterrupted(KeyboardInterrupt):          # the shape of labkit.lab.run's exception
        step, total, path = 40, 1200, "runs/cpu/vqgan.safetensors"

    def stopped(argv):
        raise TrainingInterrupted("interrupted at step 40 of 1200; checkpoint saved at "
                                  "runs/cpu/vqgan.safetensors; run the same command again to resume")

    def plain(argv):
        raise KeyboardInterrupt

    assert run_command(stopped, []) == EXIT_INTERRUPTED
    assert capsys.readouterr().err == ("interrupted at step 40 of 1200; checkpoint saved at "
                                       "runs/cpu/vqgan.safetensors; run the same command again to resume\n")
    assert run_command(plain, []) == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "interrupted\n"


def test_the_default_runs_root_does_not_depend_on_the_current_folder(tmp_path, monkeypatch):
    from labkit.lab.utils import runs_root
    monkeypatch.delenv("LABKIT_RUNS", raising=False)
    here = runs_root()
    monkeypatch.chdir(tmp_path)
    assert runs_root() == here == ROOT / "runs"
