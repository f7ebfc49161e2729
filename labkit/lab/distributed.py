"""Training on several GPUs (or CPU processes) with ``torchrun`` and DistributedDataParallel.

    torchrun --nproc_per_node=4 -m labkit train-mvtm --profile gpu

torchrun starts one process per GPU and tells each its place through environment
variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). ``init`` joins them
into one process group; without torchrun everything here is a no-op and training runs
in one process exactly as before.

How labkit splits the work (``labkit.lab.run.TrainingRun``: ``share``, ``parallel``,
``stream``): the config's batch size is the *global* batch. Every rank draws the same batch
indices from the same seeded generator and keeps its own contiguous slice of
``batch / world_size`` examples; the student's ``mvtm_step`` runs on that slice, its masks
drawn from a stream of the rank's own (seeded by the seed, the rank and the step). DDP
averages the gradients, so the step is the mean of the ranks' losses; the VQGAN's codebook
statistics are summed over the ranks (``AllProcesses``). Rank 0 alone writes checkpoints,
logs and progress bars; every rank loads the same checkpoint on resume.
"""

from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as dist

def is_distributed() -> bool:
    """True inside a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """The one process that writes files and prints (rank 0, or the only process)."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: str | torch.device | None = None) -> torch.device | None:
    """Join torchrun's process group; returns this rank's device (None without torchrun).

    Backend nccl when the device is CUDA (each rank takes GPU ``LOCAL_RANK``), gloo
    otherwise (CPU processes, e.g. the tests).
    """
    if not launched_by_torchrun():
        return None
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    wanted = None if device in (None, "auto") else torch.device(device)
    use_cuda = torch.cuda.is_available() if wanted is None else wanted.type == "cuda"
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return device


def cleanup() -> None:
    """Leave the process group (at the end of a torchrun command)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def seed_rank(seed: int, step: int = 0) -> None:
    """Give ranks 1.. their own torch streams (dropout), after the shared initialisation.

    Rank 0 keeps the stream of a single-process run, so 1 and N processes start alike;
    ``step`` makes a resumed run draw fresh numbers instead of replaying rank 0's.
    """
    if rank() > 0:
        torch.manual_seed(seed + 1_000_003 * rank() + step)


def rank_seed(seed: int, rank: int, step: int) -> int:
    """The seed of rank ``rank``'s own random masks at training step ``step``: a function of the
    three only, so a resumed run draws what an uninterrupted one would."""
    return ((seed * 1_000_003 + rank) * 1_000_033 + step) % 2**63


def shard(global_batch: int) -> slice:
    """This rank's contiguous slice of a global batch of ``global_batch`` examples."""
    size = world_size()
    if global_batch % size:
        raise ValueError(f"the batch size {global_batch} does not split over {size} processes: "
                         f"use a batch size divisible by {size} (e.g. get_config(..., "
                         f"mvtm_batch_size={global_batch // size * size or size}))")
    per_rank = global_batch // size
    return slice(rank() * per_rank, (rank() + 1) * per_rank)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over the ranks, in place (a no-op in one process); returns it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``tensor`` (same shape on all) along dim 0, in rank order:
    the global batch, as one process would have it."""
    if not is_distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def broadcast(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite ``tensor`` on every rank with rank ``src``'s values (a no-op in one process)."""
    if is_distributed():
        dist.broadcast(tensor, src=src)
    return tensor


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if ``flag`` is true on any: ranks stop at the same step."""
    if not is_distributed():
        return flag
    return bool(all_reduce_sum(torch.tensor(float(flag), device=device)) > 0)


def barrier() -> None:
    """Wait until every rank gets here (a no-op in one process)."""
    if is_distributed():
        dist.barrier()


@contextlib.contextmanager
def main_first():
    """Rank 0 runs the block first (e.g. writing a cache), then the others (reading it)."""
    if is_distributed() and not is_main():
        dist.barrier()
    yield
    if is_distributed() and is_main():
        dist.barrier()


class AllProcesses:
    """How a module combines statistics over the processes (``labkit.core.vqgan.OneProcess``
    under torchrun): the VQGAN's codebook counts are summed over every process, and the codes
    it restarts are picked by rank 0 from the whole batch and sent to the others, so every
    process's codebook moves as one process's would on the global batch."""

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return all_reduce_sum(tensor)

    def choose(self, flat: torch.Tensor, n: int) -> torch.Tensor:
        """(n, C) random rows of the global batch ``flat`` (this process's (M, C) rows)."""
        flat = all_gather_cat(flat)
        picks = torch.empty(n, flat.shape[1], dtype=flat.dtype, device=flat.device)
        if is_main():
            picks = flat[torch.randint(0, flat.shape[0], (n,), device=flat.device)]
        return broadcast(picks)


__all__ = ["init", "cleanup", "is_distributed", "is_main", "rank", "world_size", "seed_rank",
           "shard", "all_reduce_sum", "all_gather_cat", "broadcast", "any_rank", "barrier",
           "main_first", "launched_by_torchrun", "rank_seed", "AllProcesses"]
