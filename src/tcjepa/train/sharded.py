"""Sharded checkpoints (``train.checkpoint_format=sharded``): one torch.distributed.checkpoint folder per save.

Under FSDP each rank holds a shard of every parameter and of its optimizer state. The full format gathers
them on rank 0 into one file, which needs the whole model in one process's memory; the sharded format has
every rank write its own shards with ``torch.distributed.checkpoint.save`` (DCP) instead. A checkpoint is a
folder ``checkpoints/step_<N>.dcp/`` holding DCP's files (``.metadata`` and one ``__<rank>_0.distcp`` per
rank, with the model under ``model.`` and the optimizer, keyed by parameter name, under ``optim.``) and
``tcjepa.pt``: what is not a tensor of the model or optimizer (format, step, config, rank 0's RNG states),
exactly what a full checkpoint stores beside them.

Atomic like the full format: the ranks write into ``.step_<N>.dcp.tmp/``; after a barrier (every rank's
files are on disk, DCP having fsynced them) rank 0 adds ``tcjepa.pt``, renames the folder to
``step_<N>.dcp`` and then moves the symbolic link ``latest.dcp`` onto it (a new link renamed over the old,
which is atomic). A crash at any point leaves ``latest.dcp`` on the previous complete folder; a leftover
``.tmp`` folder is removed by the next save. The folder ``latest.dcp`` left is deleted unless
``train.keep_every`` keeps its step, as ``step_<N>.pt`` files are kept.

Reading: a resume under FSDP loads each rank's shards (DCP reshards when the number of ranks changed); in
one process, or without any process group (``tcjepa eval``/``export``), DCP reads the whole tensors.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import torch

from .checkpoint import META_FILE, CheckpointError, atomic_save, fsync_dir, one_process_is_meant
from .distributed import DistContext, barrier

LATEST_LINK = "latest.dcp"
_STEP_DIR = re.compile(r"step_(\d+)\.dcp")


def step_dir_name(step: int) -> str:
    return f"step_{step}.dcp"


def save_sharded(
    method: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    meta: dict,
    ckpt_dir: Path,
    keep_every: int,
    ctx: DistContext,
) -> Path:
    """Write the checkpoint of step ``meta["step"]`` from every rank; returns its folder. A collective."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    step = int(meta["step"])
    final = ckpt_dir / step_dir_name(step)
    tmp = ckpt_dir / f".{final.name}.tmp"
    if ctx.is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        if tmp.exists():  # a save that died before its rename
            shutil.rmtree(tmp)
    barrier(ctx)  # no rank writes into the folder before it is empty
    model_state, optim_state = get_state_dict(method, optimizer)  # this rank's shards (DTensors under FSDP)
    with one_process_is_meant():
        dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=tmp)
    barrier(ctx)  # every rank's shards are written before the folder becomes a checkpoint
    if ctx.is_main:
        atomic_save(meta, tmp / META_FILE)
        publish(tmp, final, keep_every)
    barrier(ctx)  # the next save's clean-up waits for this one
    return final


def publish(tmp: Path, final: Path, keep_every: int) -> None:
    """Rename the complete folder ``tmp`` to ``final`` and point ``latest.dcp`` at it (rank 0)."""
    ckpt_dir = final.parent
    link = ckpt_dir / LATEST_LINK
    previous = os.readlink(link) if link.is_symlink() else None
    if final.exists():
        if previous == final.name:
            # The step ``latest.dcp`` already holds (a resume with no step left to train): the tensors are the
            # ones loaded, so only the non-tensor part is replaced, atomically; the folder stays in place.
            atomic_save(torch.load(tmp / META_FILE, weights_only=True), final / META_FILE)
            shutil.rmtree(tmp)
            return
        shutil.rmtree(final)  # complete but never linked: the run died before moving latest.dcp
    os.rename(tmp, final)
    fsync_dir(ckpt_dir)
    new_link = ckpt_dir / f".{LATEST_LINK}.tmp"
    if new_link.is_symlink() or new_link.exists():
        new_link.unlink()
    os.symlink(final.name, new_link)  # relative: the run folder can move
    os.replace(new_link, link)
    fsync_dir(ckpt_dir)
    if previous and previous != final.name and not _kept(previous, keep_every):
        shutil.rmtree(ckpt_dir / previous, ignore_errors=True)


def _kept(name: str, keep_every: int) -> bool:
    match = _STEP_DIR.fullmatch(name)
    return bool(match and keep_every and int(match.group(1)) % keep_every == 0)


def load_sharded_into(method: torch.nn.Module, optimizer: torch.optim.Optimizer, path: Path) -> None:
    """Load a sharded checkpoint's model and optimizer into ``method`` (sharded or whole) and ``optimizer``.

    Each rank reads the pieces of its own shards, whatever the number of ranks that wrote them; in one
    process (no process group) the whole tensors. A collective under FSDP: every rank calls it.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optim_state = get_state_dict(method, optimizer)  # the layout to fill: this rank's shards
    state = {"model": model_state, "optim": optim_state}
    try:
        with one_process_is_meant():
            dcp.load(state, checkpoint_id=path)
    except Exception as e:
        raise CheckpointError(
            f"cannot load the sharded checkpoint {path} into this model ({type(e).__name__}: {str(e)[:300]}). "
            "It may be incomplete or from another model."
        ) from None
    set_state_dict(method, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
