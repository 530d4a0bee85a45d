"""Data parallelism over torch.distributed: ranks share the sequences, sums are reduced.

Under torchrun (or any launcher that sets up a default process group), each of the W ranks
computes the per-sequence work of the sequences i with i mod W == its rank: gradient rows,
losses, moments, per-record Hessian-vector products and exact products. Every result is
written into a full-size buffer that is zero elsewhere and then summed over the ranks with
all_reduce. Afterwards every rank has the same G (or its sketch), K, v, h and products, so the
rest of the analysis runs identically on each. Without a process group (one process)
every function here is a no-op.

NOTE: a time budget that runs out on one rank only would leave the others waiting in
all_reduce. Give every rank the same budget and work.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Shard:
    """This process's rank among `world` ranks."""

    rank: int
    world: int

    def owns(self, position: int) -> bool:
        """True when sequence `position` is this rank's work."""
        return position % self.world == self.rank


def current_shard() -> Shard | None:
    """Return this process's shard when a process group of two or more ranks is running."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    return Shard(dist.get_rank(), dist.get_world_size())


def reduce_sum(tensor: torch.Tensor | None, shard: Shard | None) -> torch.Tensor | None:
    """Sum `tensor` over the ranks in place (on CPU or the tensor's device) and return it."""
    if shard is None or tensor is None:
        return tensor
    import torch.distributed as dist

    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def init_from_environment() -> Shard | None:
    """Join the process group that torchrun describes in the environment (WORLD_SIZE > 1).

    Uses NCCL when CUDA is available and gloo otherwise. Returns None outside torchrun.
    """
    import os

    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return None
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return current_shard()
