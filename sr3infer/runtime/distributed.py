"""Sharding a folder of images over the ranks of a `torchrun` job (gloo on CPU, NCCL on GPU)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

__all__ = ["DistContext", "init_from_env", "launched_by_torchrun", "shard_indices"]

log = logging.getLogger(__name__)


def shard_indices(count: int, rank: int, world_size: int) -> list[int]:
    """Indices of `count` sorted items that `rank` handles: every `world_size`-th, from `rank`."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..{world_size - 1} for world_size {world_size}, got rank {rank}.")
    return list(range(rank, count, world_size))


@dataclass
class DistContext:
    """This process's place in the job; a single process is rank 0 of 1 with no process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None       # "gloo" or "nccl" when a process group was started
    device: str | None = None        # the device this rank should run on (None: the library default)

    @property
    def distributed(self) -> bool:
        return self.backend is not None

    def _comm_device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")

    def barrier(self) -> None:
        """Wait for every rank (an all-reduce, which works alike on gloo and NCCL)."""
        if self.distributed:
            import torch.distributed as dist

            dist.all_reduce(torch.zeros(1, device=self._comm_device()))

    def any_rank(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on at least one."""
        if not self.distributed:
            return flag
        import torch.distributed as dist

        value = torch.tensor([1.0 if flag else 0.0], device=self._comm_device())
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def gather_counts(self, counts: list[int]) -> list[list[int]]:
        """Every rank's `counts`, indexed by rank (also the barrier before the summary)."""
        if not self.distributed:
            return [list(counts)]
        import torch.distributed as dist

        mine = torch.tensor(counts, dtype=torch.long, device=self._comm_device())
        gathered = [torch.zeros_like(mine) for _ in range(self.world_size)]
        dist.all_gather(gathered, mine)
        return [t.tolist() for t in gathered]

    def close(self) -> None:
        """Tear the process group down (no collective: safe after an error on this rank)."""
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self.backend = None


def _env_int(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"Environment variable {name} must be an integer, got {value!r}. Is it set by torchrun?") from None


def launched_by_torchrun() -> bool:
    """True in a rank of a multi-process torchrun job."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and _env_int("WORLD_SIZE") > 1


def init_from_env(device: str | None = None) -> DistContext:
    """Start a process group when launched by torchrun (NCCL on CUDA, else gloo); `device` None or
    "cuda" uses `cuda:LOCAL_RANK`. A plain run gets a context with `distributed` False."""
    if not launched_by_torchrun():
        return DistContext(device=device)
    rank, world_size = _env_int("RANK"), _env_int("WORLD_SIZE")
    local_rank = _env_int("LOCAL_RANK") if "LOCAL_RANK" in os.environ else 0
    want_cuda = device in (None, "cuda") and torch.cuda.is_available()
    if want_cuda:
        device = f"cuda:{local_rank % torch.cuda.device_count()}"
    import torch.distributed as dist

    if not dist.is_available():
        raise RuntimeError(
            f"WORLD_SIZE={world_size} asks for a distributed run, but this torch build has no torch.distributed. "
            "Run without torchrun, or install a torch build with distributed support."
        )
    on_cuda = device is not None and torch.device(device).type == "cuda"
    backend = "nccl" if on_cuda and dist.is_nccl_available() else "gloo"
    if on_cuda and device is not None:  # on_cuda implies a device; said again for the type checker
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    log.info("rank %d of %d on %s (%s)", rank, world_size, device or "the default device", backend)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, backend=backend, device=device)
