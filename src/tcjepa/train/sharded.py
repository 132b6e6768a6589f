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
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from .checkpoint import FORMAT_VERSION, CheckpointError, atomic_save, fsync_dir
from .distributed import DistContext, barrier

LATEST_LINK = "latest.dcp"
META_FILE = "tcjepa.pt"
_STEP_DIR = re.compile(r"step_(\d+)\.dcp")


@contextmanager
def _one_process_is_meant() -> Iterator[None]:
    """Without a process group DCP warns that it assumes one process: here it is meant (one-process runs,
    eval, export), so the warning would only alarm."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to (save|load) in a single process")
        yield


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
    with _one_process_is_meant():
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


def read_meta(path: Path) -> dict:
    """The non-tensor part of a sharded checkpoint (step, config, RNG), checked like a full checkpoint."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(
            f"no sharded checkpoint at {path}"
            + (f" (the link points at {os.readlink(path)}, which is missing)" if path.is_symlink() else "")
            + ": nothing to resume. Point checkpoints/latest.dcp at a complete step_<N>.dcp folder of the run "
            "(ln -sfn step_<N>.dcp latest.dcp), or start the run without --resume."
        )
    meta_path = path / META_FILE
    try:
        meta = torch.load(meta_path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"sharded checkpoint {path} has no readable {META_FILE} ({type(e).__name__}: {str(e)[:200]}); it is "
            "not a complete tcjepa checkpoint. Point checkpoints/latest.dcp at another step_<N>.dcp folder."
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"sharded checkpoint {path} is not a tcjepa training checkpoint of format {FORMAT_VERSION} "
            f"(found format {meta.get('format') if isinstance(meta, dict) else type(meta).__name__})."
        )
    return meta


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
        with _one_process_is_meant():
            dcp.load(state, checkpoint_id=path)
    except Exception as e:
        raise CheckpointError(
            f"cannot load the sharded checkpoint {path} into this model ({type(e).__name__}: {str(e)[:300]}). "
            "It may be incomplete or from another model."
        ) from None
    set_state_dict(method, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])


def read_whole(path: Path, with_optimizer: bool = True) -> dict:
    """A sharded checkpoint as the dict a full checkpoint holds, whole tensors on the CPU, in this process.

    For readers without a process group (eval, export, compare): DCP assembles every tensor from the
    ranks' files. ``with_optimizer=False`` leaves the optimizer state (twice the model under AdamW) unread.
    """
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict_from_keys

    state = read_meta(path)
    with _one_process_is_meant():
        loaded = _load_state_dict_from_keys({"model", "optim"} if with_optimizer else {"model"}, checkpoint_id=path)
    state["method"] = loaded["model"]
    if with_optimizer:
        state["optimizer"] = loaded["optim"]
    return state
