"""Process-group helpers for `torchrun`: one process per GPU (or per CPU slot with gloo).

Under torchrun (WORLD_SIZE > 1) the trainer shards each epoch's seeded permutation over the ranks, wraps the
model in DistributedDataParallel, lets rank 0 alone log, evaluate and write files, and agrees on stop/NaN
flags with one tiny all-reduce per step. With WORLD_SIZE unset or 1 every helper here is a no-op, so a plain
`emtm train` runs exactly as before.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from emtm.errors import ConfigError, EmtmError


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise EmtmError(
            f"environment variable {name}={value!r} is not an integer (torchrun sets it)"
        ) from None


def is_main_process() -> bool:
    """True outside torchrun and on its rank 0 (read from the environment, before any process group)."""
    return env_int("RANK", 0) == 0


@dataclass
class Dist:
    """This process's place in the job; world_size 1 means a plain single-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def any(self, *flags: bool) -> list[bool]:
        """Each flag OR-ed over all ranks (one all-reduce), so every rank takes the same branch."""
        if not self.active:
            return [bool(f) for f in flags]
        t = torch.tensor([float(bool(f)) for f in flags], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [bool(v) for v in t.tolist()]

    def sum_values(self, values: dict[str, float]) -> dict[str, float]:
        """Per-key sums over all ranks (every rank must pass the same keys)."""
        if not self.active or not values:
            return dict(values)
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return dict(zip(keys, t.tolist()))

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (small picklable objects between our own processes only)."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, indexed by rank, on every rank."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module to call for training steps: DDP over `model` when distributed, else `model`."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def setup(device: torch.device, timeout_s: float = 1800) -> Dist:
    """Join the torchrun job described by the environment (gloo on CPU, NCCL on CUDA), if there is one."""
    world = env_int("WORLD_SIZE", 1)
    if world <= 1:
        return Dist(device=device)
    if not dist.is_available():
        raise EmtmError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed support")
    local_rank = env_int("LOCAL_RANK", 0)
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise EmtmError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) are visible on this "
                "node; use --nproc_per_node <= the number of GPUs"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
        owns = True
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank, device, owns)


def per_rank_batch(global_batch: int, world_size: int) -> int:
    """optim.batch_size is the global batch: each of the world_size ranks takes an equal share."""
    if global_batch % world_size:
        raise ConfigError(
            f"optim.batch_size {global_batch} is the global batch and must be divisible by the "
            f"{world_size} processes of this torchrun job; pick e.g. "
            f"{world_size * max(1, global_batch // world_size)}"
        )
    return global_batch // world_size


def shard(order: list[int], rank: int, world_size: int) -> list[int]:
    """This rank's part of an epoch's permutation, like DistributedSampler(shuffle=False) on `order`.

    The order is padded with its own first items to a multiple of world_size and dealt out round-robin,
    so batch j of every rank (per-rank batch B/world) is a share of global batch j of the 1-process run.
    """
    if world_size <= 1:
        return list(order)
    padded = list(order)
    while len(padded) % world_size:
        padded.append(order[len(padded) % len(order)])
    return padded[rank::world_size]
