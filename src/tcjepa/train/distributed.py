"""Several processes, one run: torchrun's environment -> a process group, a device per process, DDP.

``torchrun --nproc_per_node=K -m tcjepa pretrain CONFIG`` starts K copies of the loop. Each builds the same
method from the same seed, DDP broadcasts rank 0's weights anyway, and each reads its own rows of every
global batch (``PretrainStream(rank, world_size)``: the rows of step s are the same whichever way the batch
is split). DDP averages gradients over ranks, so a step on K ranks with ``train.batch_size / K`` images
each equals the one-process step on the whole batch (the prediction loss is a mean over equal-sized
per-image terms). The EMA target encoder needs no sync: it is updated from weights that are equal on
every rank. Rank 0 alone writes the run folder (config, metrics.jsonl, checkpoints) and runs the monitors;
every rank reads the checkpoint when resuming.

Without torchrun's variables (``WORLD_SIZE`` unset or 1) nothing here does anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

# A rank that died leaves the others waiting in a collective; they give up after this long with an error
# naming the timeout instead of hanging until the job's wall-clock limit.
COLLECTIVE_TIMEOUT = timedelta(minutes=5)


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    started_here: bool = False  # this module created the process group, so it tears it down

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise RuntimeError(f"environment variable {name}={value!r} must be an integer (torchrun sets it)") from None


def init_distributed(device_type: str) -> DistContext:
    """The process group of a torchrun launch (gloo on CPU, nccl on CUDA), or a one-process context."""
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistContext()
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if dist.is_initialized():
        if dist.get_world_size() != world:
            raise RuntimeError(f"a process group of {dist.get_world_size()} exists but WORLD_SIZE={world}")
        return DistContext(dist.get_rank(), world, local)
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local)
    dist.init_process_group(backend, rank=rank, world_size=world, timeout=COLLECTIVE_TIMEOUT)
    return DistContext(rank, world, local, started_here=True)


def process_device(device: torch.device, ctx: DistContext) -> torch.device:
    """This process's device: on CUDA one GPU per local rank; on CPU the CPU."""
    if device.type == "cuda" and ctx.active:
        return torch.device("cuda", ctx.local_rank)
    return device


def wrap_for_training(module: torch.nn.Module, ctx: DistContext, device: torch.device) -> torch.nn.Module:
    """``module`` itself in one process, else a DDP wrapper (which broadcasts rank 0's weights once)."""
    if not ctx.active:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


def combine_over_ranks(values: dict[str, float], ctx: DistContext, summed: tuple[str, ...] = ()) -> dict[str, float]:
    """Per-rank scalars for the log, over all ranks: keys ending in ``summed`` (counters) added up, the rest
    averaged over the ranks that have them. Ranks may log different keys (a counter only some ranks hit),
    so the dicts travel as objects rather than as one fixed-size tensor; this runs on logging steps only."""
    if not ctx.active:
        return values
    every: list[dict[str, float] | None] = [None] * ctx.world_size
    dist.all_gather_object(every, values)
    out: dict[str, float] = {}
    for key in sorted({k for d in every if d for k in d}):
        seen = [float(d[key]) for d in every if d and key in d]
        out[key] = sum(seen) if key.endswith(summed) else sum(seen) / len(seen)
    return out


def barrier(ctx: DistContext) -> None:
    if ctx.active:
        dist.barrier()


def shutdown(ctx: DistContext) -> None:
    if ctx.started_here and dist.is_initialized():
        dist.destroy_process_group()
