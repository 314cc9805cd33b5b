"""Training on several processes with DistributedDataParallel, as `torchrun --nproc-per-node N` starts them.

torchrun gives each process RANK, WORLD_SIZE and LOCAL_RANK (and the rendezvous address)
in its environment; without them a run is one process and nothing here does anything.
The processes join one group, gloo on the CPU and NCCL on CUDA. Each step, every rank
takes its own share of the same global batch (`World.part`), so one epoch's shuffle
(the trainer's `epoch_order`) is split across ranks without a sampler of its own.
Rank 0 alone writes checkpoints, logs and plots; the others log warnings only. The
prefix's dropout masks, when its dropout is above 0, are drawn per rank, so only such a
run differs from one process's by more than round-off.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

# rank 0 alone extracts features and runs val checks while the others wait at the next collective
COLLECTIVE_TIMEOUT = timedelta(hours=6)


@dataclass(frozen=True)
class World:
    """This process's place among the training processes: rank `rank` of `size`."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes files and logs."""
        return self.rank == 0

    def part(self, index: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global batch: every size-th one, from its rank on."""
        return index[self.rank :: self.size]

    def sum(self, value: float) -> float:
        """The sum of `value` over the ranks (float64, so that every rank gets the same number)."""
        if self.size == 1:
            return value
        on_gpu = dist.get_backend() == "nccl"  # NCCL reduces CUDA tensors only
        tensor = torch.tensor([value], dtype=torch.float64, device="cuda" if on_gpu else "cpu")
        dist.all_reduce(tensor)
        return float(tensor)

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on one: a stop request one rank got stops them all together."""
        return self.sum(float(flag)) > 0 if self.size > 1 else flag

    def from_main(self, value):
        """Rank 0's `value` (any picklable object), on every rank."""
        if self.size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (e.g. extracts and caches features); the others run it after, finding its files."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()


def world_from_env() -> World:
    """The world torchrun describes in the environment; one process when it describes none."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size < 1:
        raise ValueError(f"WORLD_SIZE must be >= 1, got {size}")
    return World(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")))


def rank_device(device: str, world: World) -> str:
    """The device of this rank: with several ranks and CUDA, each rank its own GPU (cuda:LOCAL_RANK)."""
    if world.size > 1 and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{world.local_rank}"
    return device


@contextmanager
def joined(world: World, device: torch.device) -> Iterator[None]:
    """Membership of the process group for the block: joined on entry when there are several ranks, left on exit.

    A group someone else made (an outer caller) is used and left alone.
    """
    if world.size == 1 or dist.is_initialized():
        yield
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, rank=world.rank, world_size=world.size, timeout=COLLECTIVE_TIMEOUT)
    root = logging.getLogger()
    level = root.level
    if not world.is_main:
        root.setLevel(logging.WARNING)
    logger.info("rank %d of %d joined the %s group", world.rank, world.size, backend)
    try:
        yield
    finally:
        root.setLevel(level)
        dist.destroy_process_group()
