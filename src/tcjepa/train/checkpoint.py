"""Atomic checkpoints and strict resume.

A checkpoint is written to a temporary file in the same folder, flushed to disk, then renamed over
the old one: a kill during the write leaves the previous checkpoint intact. Sharded checkpoints
(``train.checkpoint_format=sharded``, folders that every FSDP rank writes into) are ``train/sharded.py``;
``latest_checkpoint`` and ``load_checkpoint`` read either kind. Loading uses
``weights_only=True``. A missing, unreadable or incompatible checkpoint is an error that says what to
do; it never turns into a silent restart from step 0.
"""

from __future__ import annotations

import os
import random
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT_VERSION = 1

# Keys that may differ between the saved run and the resuming command without changing the result.
RESUMABLE_CHANGES = (
    "run.",
    "train.log_every",
    "train.ckpt_every",
    "train.keep_every",
    "train.threads",
    "train.device",
    "data.num_workers",
    "text.cache_mb",
    "text.cache_dir",
    "text.cache_dtype",
    "text.store",
    "train.steps",
    "data.max_skipped_fraction",
    "data.on_error",  # a run that finished under "raise" met no bad input, so "skip" would have trained the same
    "train.strategy",  # full checkpoints hold whole tensors whichever strategy wrote them (sharded ones need fsdp)
    "train.activation_checkpointing",  # recomputes the same activations: memory, not arithmetic
    "train.tensorboard",
    "train.wandb",  # and train.wandb_project, train.wandb_mode: where the numbers are copied, not what they are
)


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used; the message says which file and what to do."""


def atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk."""
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def latest_checkpoint(ckpt_dir: Path) -> Path:
    """A run's latest checkpoint: ``latest.dcp`` (the link to the newest sharded folder) when the run writes
    sharded checkpoints, else ``latest.pt`` (which may not exist yet: callers check ``.exists()``)."""
    sharded = Path(ckpt_dir) / "latest.dcp"
    return sharded if sharded.is_symlink() or sharded.exists() else Path(ckpt_dir) / "latest.pt"


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": _py_state_to_plain(random.getstate()),
    }


def _py_state_to_plain(state: tuple) -> list:
    return [state[0], list(state[1]), state[2]]


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu", with_optimizer: bool = True) -> dict:
    """A checkpoint's state: format, step, config, rng, method (whole tensors) and, unless not asked for,
    optimizer. A sharded checkpoint (a ``.dcp`` folder) is assembled in this process, on the CPU."""
    path = Path(path)
    if path.is_dir() or path.suffix == ".dcp":
        return read_whole(path, with_optimizer)
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint at {path}: nothing to resume. Start the run without --resume, or point run.dir at "
            "the folder of the run you want to continue."
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, wrong format, pickle refused by weights_only ...
        raise CheckpointError(
            f"checkpoint {path} is unreadable ({type(e).__name__}: {str(e)[:200]}). It may be truncated or not "
            "a tcjepa checkpoint. Resume from a periodic step_<N>.pt in the same folder (copy it over "
            "latest.pt) or start a new run in another run.dir."
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION or "method" not in state:
        raise CheckpointError(
            f"checkpoint {path} is not a tcjepa training checkpoint of format {FORMAT_VERSION} "
            f"(found format {state.get('format') if isinstance(state, dict) else type(state).__name__})."
        )
    return state


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


# Keys added after runs were first saved, with the value that reproduces what a run saved without them did.
# A run saved before ``mask.draw`` existed drew block sizes independently; one saved before ``mask.truncate``
# cut contexts to the batch minimum; one saved before ``train.accum_steps`` did not accumulate; one saved
# before ``data.path`` read no files (nor shards: ``data.resampled`` and the rest).
LEGACY_VALUES = {
    # The contrastive baselines' heads came later; JEPA runs saved before them never read these keys.
    "model.contrastive.embed_dim": 128,
    "model.contrastive.text_depth": 1,
    "model.contrastive.text_heads": None,
    "model.contrastive.text_width": None,
    "data.epoch_samples": 0,
    "data.path": "",
    "data.resampled": False,
    "data.shard_window": 0,
    "mask.draw": "independent",
    "model.predictor.caption_fusion": "max",  # the only fusion before the option existed
    "model.target": "ema",  # frozen teachers came later: earlier runs all trained against the EMA target
    "mask.truncate": "min",
    "optim.warmup_fraction": 0.1,
    "train.accum_steps": 1,
    "train.checkpoint_format": "full",
    "train.strategy": "ddp",
}


def config_differences(saved: dict, current: dict) -> list[str]:
    """Keys whose values differ and that matter for an exact resume (or for reusing a finished run)."""
    a, b = _flat(saved), _flat(current)
    for key, value in LEGACY_VALUES.items():
        a.setdefault(key, value)
    diffs = []
    for key in sorted(set(a) | set(b)):
        if any(key.startswith(p) for p in RESUMABLE_CHANGES):
            continue
        if a.get(key) != b.get(key):
            diffs.append(f"{key}: checkpoint has {a.get(key)!r}, this command has {b.get(key)!r}")
    return diffs


def check_compatible(path: Path, saved_cfg: dict, current_cfg: dict) -> None:
    diffs = config_differences(saved_cfg, current_cfg)
    if diffs:
        raise CheckpointError(
            f"checkpoint {path} was made with a different configuration, so it cannot continue exactly:\n  "
            + "\n  ".join(diffs)
            + "\nResume with the run's own settings (its config.yaml), or start a new run in another run.dir."
        )


# Sharded checkpoints (train.checkpoint_format=sharded, written by train/sharded.py), read in one process.
META_FILE = "tcjepa.pt"  # the non-tensor part beside DCP's files


@contextmanager
def one_process_is_meant() -> Iterator[None]:
    """Without a process group DCP warns that it assumes one process: here it is meant (one-process runs,
    eval, export), so the warning would only alarm."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to (save|load) in a single process")
        yield


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


def read_whole(path: Path, with_optimizer: bool = True) -> dict:
    """A sharded checkpoint as the dict a full checkpoint holds, whole tensors on the CPU, in this process.

    For readers without a process group (eval, export, compare): DCP assembles every tensor from the
    ranks' files. ``with_optimizer=False`` leaves the optimizer state (twice the model under AdamW) unread.
    """
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict_from_keys

    state = read_meta(path)
    with one_process_is_meant():
        loaded = _load_state_dict_from_keys({"model", "optim"} if with_optimizer else {"model"}, checkpoint_id=path)
    state["method"] = loaded["model"]
    if with_optimizer:
        state["optimizer"] = loaded["optim"]
    return state
