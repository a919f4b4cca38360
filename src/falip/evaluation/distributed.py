"""Evaluation across processes and machines with PyTorch's own launcher:

    torchrun --standalone --nproc_per_node N -m falip eval rec ...   (and multi-node torchrun)

torchrun sets RANK and WORLD_SIZE; each rank takes every WORLD_SIZE-th image (or example) of the
data set, writes its own `results.rank<R>.jsonl` as it goes, and rank 0, once all are done, merges
them into `results.jsonl` in the data set's order (the per-rank files then go) and writes the
summary. An interrupted run resumes: every rank skips what any file already holds. The results
and the summary equal a single-process run's exactly. CPU runs use the gloo backend, GPU runs NCCL.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Shard:
    """This process's part of a run: `rank` in 0 .. `world` - 1 of `world` processes (default: a single
    process, rank 0 of 1)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Whether this is rank 0, the rank that checks the settings, merges the results and summarises."""
        return self.rank == 0

    def mine(self, index: int) -> bool:
        """Whether item `index` of the data set is this rank's."""
        return index % self.world == self.rank


def current(device: str = "cpu") -> Shard:
    """This process's shard, joining torchrun's process group when there is more than one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Shard()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if str(device).startswith("cuda") else "gloo")
        # Leave the group before the interpreter tears down: a gloo group still alive at exit can end the
        # process in std::terminate ("terminate called without an active exception", SIGABRT) now and then.
        atexit.register(_leave, dist)
    return Shard(dist.get_rank(), dist.get_world_size())


def _leave(dist) -> None:
    """Destroy the process group if it is still there (registered with `atexit` by `current`)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(shard: Shard) -> None:
    """Wait for every rank (nothing to wait for in a single process)."""
    if shard.world > 1:
        import torch.distributed as dist

        dist.barrier()


def all_ok(shard: Shard, ok: bool) -> bool:
    """Whether every rank got through a step (so that one rank's error stops all of them)."""
    if shard.world <= 1:
        return ok
    import torch
    import torch.distributed as dist

    flag = torch.tensor([1 if ok else 0])
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def gather(shard: Shard, items: list) -> list:
    """Every rank's `items`, concatenated in rank order, on every rank."""
    if shard.world <= 1:
        return list(items)
    import torch.distributed as dist

    parts: list = [None] * shard.world
    dist.all_gather_object(parts, list(items))
    return [item for part in parts for item in part]


def signal_failure(shard: Shard) -> None:
    """Tell the other ranks this one failed (they stop at their next check instead of waiting)."""
    if shard.world > 1:
        all_ok(shard, False)


def single_process(what: str) -> None:
    """Refuse to run `what` under a multi-process launch (it does not shard)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from ..errors import FalipError

        raise FalipError(f"{what} runs in one process: start it without torchrun")
