"""The plumbing every training loop shares, in one object, so each loop reads like the lesson.

    run = TrainingRun(cfg, path, {"vqgan": model}, optimizer, generators, RunOptions(), facts)
    if not run.finished:
        vqgan_loop(run, cfg, model, images, batch_rng)      # labkit.core.train: the loop itself

Inside the loop: ``with run:`` (Ctrl-C guard, progress bar, a checkpoint on interrupt),
``run.more()``, ``run.check_finite(loss, grad_norm)`` before the optimizer step,
``run.count_step(loss=loss)`` (numbers queued for the log), ``run.log(lr)`` when
``run.log_due()``, ``run.end_step()`` (checkpoint when due, progress, Ctrl-C); under torchrun
``run.share``, ``run.parallel``, ``run.stream`` and ``run.gather`` split the work.

``TrainingRun`` resumes from ``path`` (weights, optimizer, every random stream, step, history,
elapsed time), writes a checkpoint every ``cfg.ckpt_every`` steps, at the end and on Ctrl-C,
with a JSON summary beside it, and stops with the step of the first non-finite loss. A
checkpoint records what produced it: a fingerprint and the source of the training data, and
the planned number of steps. Resuming with other data is refused (``DataMismatchError``), and so
is resuming or reusing a checkpoint trained with another recipe (``RecipeMismatchError``:
``labkit.config.RECIPE_FIELDS``); a stage whose input stopped early is refused
(``UnfinishedStageError``). On a GPU the loss is read back only at log and checkpoint steps;
on the CPU at every step. Under ``torchrun`` only rank 0 writes files and draws the progress bar.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from . import distributed
from .checkpoint import CheckpointError, load_checkpoint, read_header, save_checkpoint
from ..config import LabConfig
from .progress import tqdm
from .utils import atomic_write_text, check_file_target, fingerprint, get_device


def _stopped_by(signum: int) -> str:
    """How a message names the signal: "interrupted" (Ctrl-C) or "stopped by SIGTERM"."""
    if signum == signal.SIGINT:
        return "interrupted"
    return f"stopped by {signal.Signals(signum).name} (kill, or a cluster's scheduler)"


def default_in_forked_child(owner: int, signum: int) -> bool:
    """In a process forked from ``owner`` (a multiprocessing worker, which inherits the
    handlers), give the signal its usual effect and return True; in ``owner``, False."""
    if os.getpid() == owner:
        return False
    signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    return True


class Stopped(KeyboardInterrupt):
    """A signal other than Ctrl-C stopped the work where it was, without a checkpoint: SIGTERM
    outside training, or a second SIGTERM during it. ``signum``: the signal."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"{_stopped_by(signum)}; no file was left half-written: run the same "
                         "command again to go on (training resumes from its last checkpoint)")


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or Jupyter's stop button) or SIGTERM stopped training after a whole step, with a
    checkpoint.

    A ``KeyboardInterrupt``, so a script or a notebook's Run All stops; the command line
    prints ``str(error)`` and exits 128 + ``signum`` (130 for Ctrl-C, 143 for SIGTERM), and a
    notebook shows the two lines of ``_render_traceback_`` instead of a traceback.
    """

    def __init__(self, step: int, total: int, path: Path | None, signum: int = signal.SIGINT):
        self.step, self.total, self.path, self.signum = step, total, path, signum
        saved = f"checkpoint saved at {path}" if path is not None else "no run folder, nothing saved"
        super().__init__(f"{_stopped_by(signum)} at step {step} of {total}; {saved}; "
                         "run the same command again to resume")

    def _render_traceback_(self) -> list[str]:
        """What IPython / Jupyter shows instead of the traceback."""
        saved = f"checkpoint saved at {self.path}" if self.path is not None else "nothing saved"
        return [f"Training interrupted at step {self.step} of {self.total}; {saved}.",
                "Run the same cell again to resume."]


class DataMismatchError(CheckpointError):
    """A run folder's checkpoint was trained on other data than this call's."""


class RecipeMismatchError(CheckpointError):
    """The checkpoint was trained (or is being trained) with another training recipe."""


class UnfinishedStageError(CheckpointError):
    """A stage needs an earlier stage (or a checkpoint) that stopped before its last step."""


class RunFolderError(CheckpointError):
    """The run folder cannot hold checkpoints: not writable, or a file."""


def data_provenance(data: torch.Tensor, source: str) -> dict:
    """What a checkpoint records about its training data: {"fingerprint", "source"}."""
    return {"fingerprint": fingerprint(data), "source": source}


def _describe(data: dict) -> str:
    return f"{data.get('source') or 'unnamed data'} (fingerprint {data.get('fingerprint')})"


def check_run_folder(folder: Path) -> None:
    """Refuse, before any training, a run folder that is a file or cannot be written."""
    folder = Path(folder)
    how = "train in another folder (--runs DIR, or another run_dir)"
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"the run folder {folder} is a file, not a folder: {how}, or move the file away")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise RunFolderError(f"cannot write checkpoints to the run folder {folder} ({error.strerror}): "
                             f"make it writable (chmod u+w {folder}) or {how}") from None


def finished_steps(ckpt) -> tuple[int, int] | None:
    """(step, total) of a checkpoint that records its total, else None (written before
    checkpoints recorded it: unknown, treated as usable)."""
    total = ckpt.extra.get("total")
    return (ckpt.step, total) if isinstance(total, int) else None


def refuse_unfinished(what: str, progress: tuple[int, int] | None, how: str) -> None:
    """Raise ``UnfinishedStageError`` if ``progress`` = (step, total) stopped early."""
    if progress is not None and progress[0] < progress[1]:
        raise UnfinishedStageError(f"{what} is unfinished: training stopped at step {progress[0]} of "
                                   f"{progress[1]}. {how}")


def random_streams(batch_rng: torch.Generator, device: torch.device) -> dict:
    """Every random stream a training step draws from, so a resumed run replays them exactly:
    the batch/mask generator, torch's global CPU generator (dead-code restarts, dropout on
    CPU) and the CUDA generator (dropout on the GPU). A batch generator on the GPU is saved
    under another name ("batch_cuda"): its state does not fit a CPU generator."""
    batch_name = "batch" if batch_rng.device.type == "cpu" else f"batch_{batch_rng.device.type}"
    generators = {batch_name: batch_rng, "torch": torch.default_generator}
    if device.type == "cuda":
        generators["cuda"] = torch.cuda.default_generators[device.index or torch.cuda.current_device()]
    return generators


def batch_generator(seed: int, device: torch.device) -> torch.Generator:
    """Stage 2's generator of batch indices and masks, seeded with ``seed``.

    On a GPU it lives on the GPU, so a step draws its batch and masks there: copying a
    host tensor to the GPU waits for everything queued before it, which would stall the
    loop once per step. On the CPU it is the CPU generator ``seed_everything`` returns.
    """
    if device.type == "cuda":
        return torch.Generator(device).manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` inside DistributedDataParallel under torchrun, else ``model`` itself.

    The VQGAN's codebook buffers are kept in step by the quantiser's own all-reduce, so
    DDP need not broadcast buffers at every forward.
    """
    if not distributed.is_distributed():
        return model
    on_gpu = device.type == "cuda" and device.index is not None
    return DistributedDataParallel(model, device_ids=[device.index] if on_gpu else None,
                                   forward_sync_buffers=False)


def _sync_every_step(device: torch.device) -> bool:
    """Read the loss back and check it at every step (CPU), or only at log and checkpoint
    steps (GPU: each read waits for the device's queue to drain)."""
    return device.type != "cuda"


class _InterruptGuard:
    """Hold Ctrl-C (or Jupyter's stop button) and SIGTERM until the current step has finished.

    A step changes the weights, the optimizer, the codebook and the random generators;
    an interrupt in the middle would checkpoint a state that no uninterrupted run ever
    passes through. So the first signal only sets ``requested`` (and ``signum``) and the loop
    stops at the end of the step; a second one stops at once, without saving.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = self.forced = False
        self.signum = signal.SIGINT
        self.previous = {}
        self.owner = os.getpid()

    def _handle(self, signum, frame):
        if default_in_forked_child(self.owner, signum):
            return
        if self.requested:
            self.forced = True
            raise KeyboardInterrupt if signum == signal.SIGINT else Stopped(signum)
        self.requested, self.signum = True, signum
        name, again = ("Ctrl-C", "press Ctrl-C") if signum == signal.SIGINT else \
            (signal.Signals(signum).name, "send it")
        print(f"\n{name}: stopping after this step and saving a checkpoint "
              f"({again} again to stop at once, without saving)")

    def __enter__(self):
        # Signal handlers can only be installed from the main thread.
        if threading.current_thread() is threading.main_thread():
            self.previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
        for signum, previous in self.previous.items():
            signal.signal(signum, defaults[signum] if previous is None else previous)
        return False


class _FiniteWatch:
    """Remembers the first step whose loss or gradient norm was not finite.

    ``note`` queues a few tensor operations and reads nothing back, so on a GPU the loop
    does not wait for the device; ``check`` reads the record and raises. The run checks
    before every checkpoint, so no checkpoint ever holds what came of a non-finite step
    and the last good one is kept.
    """

    def __init__(self, name: str, path: Path | None, device: torch.device):
        self.name, self.path = name, path
        self.record = torch.zeros(3, dtype=torch.float64, device=device)   # step, loss, grad norm

    def note(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        values = torch.stack([torch.full((), step, dtype=torch.float64, device=self.record.device),
                              loss.detach().double(), grad_norm.detach().double()])
        first_bad = ~values[1:].isfinite().all() & (self.record[0] == 0)
        self.record = torch.where(first_bad, values, self.record)

    def check(self) -> None:
        step, loss, grad_norm = self.record.tolist()
        if step:
            kept = (f"the last good checkpoint {self.path} (step {read_header(self.path)['step']}) is kept"
                    if self.path is not None and self.path.is_file() else "no checkpoint was written yet")
            raise FloatingPointError(
                f"{self.name}: the loss became {loss} (gradient norm {grad_norm}) at step "
                f"{int(step)}; {kept}. Lower the learning rate or raise warmup_steps, then train again.")


@dataclass(frozen=True)
class RunOptions:
    """How a training run is run, not what it trains (that is the config).

    device: where (None: cuda, then mps, then cpu); resume: go on from the run folder's
    checkpoint (False: train from scratch); progress: draw a progress bar; stop_after: stop
    (with a checkpoint) after this step, as if interrupted there; compile: stage 2 through
    ``torch.compile`` (None: on CUDA only); name: the checkpoint's file name (default the
    stage's: "vqgan", "mvtm"); data_source: a name for the training data, recorded in the
    checkpoint beside its fingerprint (default: the image set's, or "n token grids").
    """
    device: str | torch.device | None = None
    resume: bool = True
    progress: bool = True
    stop_after: int | None = None
    compile: bool | None = None
    name: str | None = None
    data_source: str | None = None


STEPS_FIELD = {"vqgan": "vq_steps", "transformer": "mvtm_steps", "catnet": "catnet_steps"}
LABELS = {"vqgan": "stage 1", "transformer": "stage 2", "catnet": "catnet"}


class TrainingRun:
    """One training loop's plumbing: resume, checkpoints, Ctrl-C, NaN watch, log and progress.

    path: the checkpoint (``<run_dir>/<name>.safetensors``), or None to train in memory (no
    checkpoint, no resume, Ctrl-C stops at once). models: {part: model}, the model trained
    under its part's name ("vqgan", "transformer" or "catnet"; the steps are the config's for
    that part). generators: {name: torch.Generator}, every random stream a step draws from. facts:
    JSON-able facts saved with every checkpoint, among them "data" (``data_provenance``).
    check: called with the checkpoint before resuming from it, to refuse one.
    """

    def __init__(self, cfg: LabConfig, path: Path | None, models: dict, optimizer, generators: dict,
                 options: RunOptions, facts: dict, check=None):
        (part, model), = models.items()
        self.cfg, self.path, self.part, self.model = cfg, path, part, model
        self.optimizer, self.generators, self.options = optimizer, generators, options
        self.total = getattr(cfg, STEPS_FIELD[part])
        self.device = get_device(options.device)
        self.desc = LABELS[part] if path is None or part == "catnet" else f"{LABELS[part]} ({path.stem})"
        self.data, self.facts = facts["data"], dict(facts)
        ckpt = self._resume(check) if options.resume and path is not None and path.is_file() else None
        self.step = ckpt.step if ckpt else 0
        self.history = ckpt.metrics if ckpt else []
        state = ckpt.extra if ckpt else {}
        self.window = state.get("window", {})
        self.resumed_elapsed = state.get("elapsed_s", 0.0)
        self.finished = self.step >= self.total
        distributed.seed_rank(cfg.seed, self.step)
        if path is not None and not self.finished:
            check_run_folder(path.parent)
            check_file_target(path)
        self.watch = _FiniteWatch(self.desc, path, self.device)
        self.sync_every_step = _sync_every_step(self.device)
        self.pending = []       # (names, values) of the steps not read back yet
        self.compiled = False   # set by a loop whose model runs under torch.compile
        self._rank_stream = None

    def _resume(self, check):
        """Load the checkpoint into the model, optimizer and generators.

        A checkpoint written on another kind of device lacks some random streams (or has
        ones this device does not use): the missing ones restart from the seed and the
        step, with a warning.
        """
        ckpt = load_checkpoint(self.path, part=self.part, config=self.cfg, map_location="cpu")
        recipe = self.cfg.recipe_diff(ckpt.config, self.part)
        if recipe:
            fields = ", ".join(f"{k}: yours {a!r} vs checkpoint {b!r}" for k, (a, b) in recipe.items())
            raise RecipeMismatchError(
                f"{self.path} was trained with another recipe ({fields}); "
                f"{'reusing' if ckpt.step >= self.total else 'resuming'} it would give a model your "
                "config did not ask for. Train in a new run folder (--runs DIR, or another run_dir or "
                "name), start this one again from scratch (--fresh, or resume=False), or use the "
                "config it was made with.")
        if check is not None:
            check(ckpt)
        saved = ckpt.extra.get("data")
        if isinstance(saved, dict) and saved.get("fingerprint") not in (None, self.data["fingerprint"]):
            raise DataMismatchError(
                f"{self.path} was trained on {_describe(saved)}, but this run got "
                f"{_describe(self.data)}. Train on the new data in a new run folder (--runs DIR, "
                "or another run_dir), or start this one again from scratch (--fresh, or resume=False).")
        ckpt.load_model(self.part, self.model)
        ckpt.load_optimizer(self.optimizer)
        missing = []
        for name, generator in self.generators.items():
            if f"rng.{name}" in ckpt.tensors:
                generator.set_state(ckpt.rng_state(name))
            else:
                generator.manual_seed(self.cfg.seed + ckpt.step)
                missing.append(name)
        if missing:
            warnings.warn(f"{self.path} was written on another kind of device: the random streams "
                          f"{missing} restart from the seed at step {ckpt.step}. Training goes on "
                          "from the saved weights, but does not replay an uninterrupted run exactly.",
                          stacklevel=4)
        return ckpt

    # -- the loop
    def __enter__(self):
        self.start = time.perf_counter() - self.resumed_elapsed
        self.bar = tqdm(total=self.total, initial=self.step, desc=self.desc,
                        disable=not (self.options.progress and distributed.is_main()))
        self.guard = _InterruptGuard() if self.path is not None else None
        if self.guard is not None:
            self.guard.__enter__()
        return self

    def __exit__(self, kind, error, traceback):
        self.bar.close()
        if self.guard is None:
            return False
        self.guard.__exit__(kind, error, traceback)
        if kind is not None and issubclass(kind, KeyboardInterrupt) and not self.guard.forced:
            self.save()
            raise TrainingInterrupted(self.step, self.total, self.path, self.guard.signum) from None
        return False

    def elapsed(self) -> float:
        """Seconds of training, across resumes."""
        return time.perf_counter() - self.start

    def more(self) -> bool:
        """Another step to run: not at the total, nor at ``stop_after``."""
        return self.step < self.total and self.step != self.options.stop_after

    def set_lr(self, lr: float) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    # -- one process or several (torchrun)
    @property
    def is_main(self) -> bool:
        """The process that writes files and prints (rank 0, or the only one)."""
        return distributed.is_main()

    def share(self, global_batch: int) -> slice:
        """This process's rows of a global batch of ``global_batch`` (all of them in one process)."""
        return distributed.shard(global_batch)

    def parallel(self, model: nn.Module) -> nn.Module:
        """``model`` as a step should call it: itself in one process; under torchrun inside
        DistributedDataParallel, with its statistics (the VQGAN's codebook) summed over the
        processes."""
        if not distributed.is_distributed():
            return model
        for module in model.modules():
            if hasattr(module, "processes"):
                module.processes = distributed.AllProcesses()
        return wrap_ddp(model, self.device)

    def stream(self, shared: torch.Generator) -> torch.Generator:
        """The generator this process draws its random masks from: ``shared`` (the batch
        generator) in one process. Under torchrun every process draws from one of its own,
        seeded by the seed, its rank and the step, so that the processes mask their images
        independently and a resumed run draws what an uninterrupted one would."""
        if not distributed.is_distributed():
            return shared
        if self._rank_stream is None:
            self._rank_stream = torch.Generator(shared.device)
        return self._rank_stream.manual_seed(distributed.rank_seed(self.cfg.seed, distributed.rank(), self.step))

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every process's ``tensor``, concatenated (the tensor itself in one process)."""
        return distributed.all_gather_cat(tensor)

    @contextlib.contextmanager
    def first_compiled_step(self):
        """Name the way out when the first step under ``torch.compile`` fails; later
        errors keep their own message."""
        if not self.compiled:
            yield
            return
        try:
            yield
        except Exception as error:
            reason = f"{type(error).__name__}: {error}".splitlines()[0][:200]
            raise RuntimeError(f"the first training step under torch.compile failed ({reason}). "
                               "If the compiler is the cause, train without it: "
                               "train_mvtm(..., RunOptions(compile=False)) or "
                               "`python -m labkit train-mvtm --no-compile`") from error
        self.compiled = False          # from now on errors are the model's own

    def check_finite(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        """Note a non-finite loss or gradient norm of the step being run (read back at
        once on the CPU, at the next log or checkpoint on a GPU)."""
        self.watch.note(self.step + 1, loss, grad_norm)
        if self.sync_every_step:
            self.watch.check()

    def count_step(self, **numbers: torch.Tensor) -> None:
        """The step is done: count it, and queue its (scalar tensor) numbers for the log,
        averaged over the processes under torchrun."""
        self.step += 1
        if numbers:
            values = torch.stack([value.detach().double() for value in numbers.values()])
            if distributed.is_distributed():
                values = distributed.all_reduce_sum(values) / distributed.world_size()
            self.pending.append((tuple(numbers), values))

    def _read_back(self) -> None:
        """Move the queued numbers into the window (one wait for the device), and stop on a
        non-finite one."""
        if self.pending:
            rows = torch.stack([values for _, values in self.pending]).tolist()
            for (names, _), row in zip(self.pending, rows):
                for name, value in zip(names, row):
                    self.window.setdefault(name, []).append(value)
            self.pending.clear()
        self.watch.check()

    def log_due(self) -> bool:
        return self.step % self.cfg.log_every == 0 or self.step == self.total

    def log(self, lr: float, **more) -> dict:
        """Append a history entry: step, the window's means, lr, ``more``, elapsed_s."""
        self._read_back()
        means = {key: sum(values) / len(values) for key, values in self.window.items() if values}
        entry = {"step": self.step, **means, "lr": lr, **more, "elapsed_s": self.elapsed()}
        self.history.append(entry)
        self.window = {key: [] for key in self.window}
        return entry

    def show(self, **postfix) -> None:
        """Numbers to show beside the progress bar."""
        self.bar.set_postfix(**postfix)

    def end_step(self) -> None:
        """Checkpoint when due, advance the progress bar, and stop (all ranks) on Ctrl-C."""
        if (self.step % self.cfg.ckpt_every == 0 or self.step == self.total
                or self.step == self.options.stop_after):
            self.save()
        self.bar.update(1)
        if self.guard is not None and distributed.any_rank(self.guard.requested, self.device):
            raise KeyboardInterrupt

    def save(self) -> None:
        """Write the checkpoint and its JSON summary (rank 0), never after a non-finite step."""
        self._read_back()
        if self.path is None:
            return
        if distributed.is_main():
            facts = {"elapsed_s": self.elapsed(), "total": self.total, **self.facts}
            save_checkpoint(self.path, config=self.cfg, models={self.part: self.model},
                            step=self.step, optimizer=self.optimizer, generators=self.generators,
                            metrics=self.history, extra={"window": self.window, **facts})
            write_summary(self.path.with_suffix(".json"), self.cfg, self.step, self.total,
                          self.history, facts)
        distributed.barrier()        # no rank reads the file (to resume) before it is written


def write_summary(path: Path, cfg: LabConfig, step: int, total: int, history: list, facts: dict) -> None:
    """The human-readable summary beside a checkpoint (written atomically too)."""
    summary = {"step": step, "total_steps": total, "finished": step >= total,
               "final": history[-1] if history else None, "config": cfg.to_dict(), **facts}
    atomic_write_text(path, json.dumps(summary, indent=2) + "\n")


__all__ = ["TrainingRun", "RunOptions", "TrainingInterrupted", "Stopped", "DataMismatchError", "RecipeMismatchError",
           "UnfinishedStageError", "RunFolderError", "data_provenance", "check_run_folder",
           "finished_steps", "refuse_unfinished", "wrap_ddp", "random_streams", "batch_generator"]
