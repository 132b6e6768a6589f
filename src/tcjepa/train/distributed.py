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


def wrap_for_training(
    method: torch.nn.Module, ctx: DistContext, device: torch.device, strategy: str = "ddp"
) -> torch.nn.Module:
    """What the step calls: ``method`` itself in one process; a DDP wrapper (which broadcasts rank 0's
    weights once); or, for ``fsdp``, ``method`` sharded in place (FSDP2 ``fully_shard``).

    FSDP shards every transformer block (of the context encoder, the EMA target encoder and the predictor),
    then the method: parameters, gradients and optimizer state live as one shard per rank and each block is
    gathered just for its own forward and backward. The EMA target encoder is sharded exactly like the
    context encoder, so its update (``after_step``) runs on matching local shards with no communication; it
    only ever runs forward, under no_grad.
    """
    if not ctx.active:
        return method
    if strategy == "fsdp":
        return _fully_shard(method)
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(method, device_ids=ids)


def _fully_shard(method: torch.nn.Module) -> torch.nn.Module:
    from torch.distributed.fsdp import fully_shard

    from ..models.predictor import PredictorBlock
    from ..models.vit import Block

    for module in list(method.modules()):
        if isinstance(module, (Block, PredictorBlock)):
            fully_shard(module)
    # The rest (patch and position embeddings, norms, the predictor's input and output maps) is small: it
    # is one group of the method, gathered for the whole step.
    fully_shard(method)
    return method


def is_sharded(method: torch.nn.Module) -> bool:
    return any(hasattr(p, "full_tensor") for p in method.parameters())


def full_training_state(method: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict, str]:
    """(model state, optimizer state, format) as whole tensors on the CPU, whatever the sharding.

    Sharded (FSDP) state is gathered with torch.distributed.checkpoint's state-dict helpers (a collective:
    every rank calls this) into the same full tensors a one-process run saves, so checkpoints resume on any
    number of processes and ``tcjepa eval``/``export`` read them unchanged. Their optimizer state is keyed
    by parameter name ("fqn"), where a plain ``optimizer.state_dict()`` is keyed by position ("plain").
    """
    if not is_sharded(method):
        return method.state_dict(), optimizer.state_dict(), "plain"
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(method, options=opts), get_optimizer_state_dict(method, optimizer, options=opts), "fqn"


def load_training_state(method: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a checkpoint's model and optimizer state into ``method`` (sharded or not) and ``optimizer``."""
    fmt = state.get("optimizer_format", "plain")
    if not is_sharded(method) and fmt == "plain":
        method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        return
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True)
    set_model_state_dict(method, state["method"], options=opts)
    if fmt == "fqn":
        set_optimizer_state_dict(method, optimizer, state["optimizer"], options=opts)
        return
    # A one-process or DDP checkpoint resumed under FSDP: its optimizer state is numbered by position
    # (over the groups in order); name it, as the FSDP loader expects.
    names = [n for group in _named_groups(method, optimizer) for n in group]
    plain = state["optimizer"]
    named = {
        "state": {names[i]: v for i, v in plain["state"].items()},
        "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in plain["param_groups"]],
    }
    set_optimizer_state_dict(method, optimizer, named, options=opts)


def _named_groups(method: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[list[str]]:
    """Parameter names of each optimizer group, in the order ``optimizer.state_dict()`` numbers them."""
    name_of = {id(p): n for n, p in method.named_parameters()}
    return [[name_of[id(p)] for p in group["params"]] for group in optimizer.param_groups]


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
