"""A Weights & Biases copy of metrics.jsonl (``train.wandb=true``), offline by default.

Like the TensorBoard events (``tensorboard.py``) it is a copy for eyes: every number of each metrics record at
its step, under the same grouped tags (``loss/``, ``optim/``, ``monitor/``...), with the resolved config. The
run lives in the run folder (``<run_dir>/wandb/``) and takes its name from it. ``train.wandb_mode=offline``
(the default) only writes files there, ``wandb sync <run_dir>/wandb/offline-run-*`` uploads them later;
``online`` streams to the W&B server and needs network and a login. Everything is passed to ``wandb.init``:
no ``WANDB_*`` variable of the user's environment is set or changed.

A resume continues the same W&B run: its id is kept in ``<run_dir>/wandb_run_id``. W&B's history only moves
forward, so unlike metrics.jsonl and TensorBoard the points a killed run logged past its checkpoint are not
replaced. ``wandb`` is an optional dependency (``pip install 'tcjepa[wandb]'``).
"""

from __future__ import annotations

import importlib.util
import secrets
from pathlib import Path
from typing import Any

from ..config import ConfigError
from .tensorboard import scalars_of

RUN_ID_FILE = "wandb_run_id"


def wandb_installed() -> bool:
    return importlib.util.find_spec("wandb") is not None


def require_wandb(wanted: bool) -> None:
    """Fail at the start of training, before any work, when ``train.wandb=true`` cannot be honoured."""
    if wanted and not wandb_installed():
        raise ConfigError(
            "config key 'train.wandb'=true needs the wandb package, which is not installed: "
            "pip install 'tcjepa[wandb]' (in a checkout: pip install -e '.[wandb]'), or set train.wandb=false"
        )


def run_id(run_dir: Path, resume: bool) -> str:
    """The W&B id of this run folder: kept across resumes, new for a fresh start (one W&B run per training)."""
    path = run_dir / RUN_ID_FILE
    if resume and path.exists():
        return path.read_text().strip()
    new = secrets.token_hex(4)  # W&B ids are [a-z0-9]; eight hex digits as wandb.util.generate_id draws
    path.write_text(new + "\n")
    return new


def settings_for(mode: str) -> dict[str, Any]:
    """``wandb.Settings`` fields. Offline, nothing that could reach a network runs: no system-metrics sampler
    and no system-metadata probe (both may ask a cloud metadata server). Console capture is off in both modes:
    the terminal keeps its output, and metrics.jsonl holds the numbers."""
    settings: dict[str, Any] = {"console": "off", "save_code": False}
    if mode == "offline":
        settings.update(x_disable_stats=True, x_disable_meta=True)
    return settings


class WandbLog:
    """Logs each metrics record's numbers at its step into one W&B run in ``run_dir``; as a context manager it
    finishes the run, marked failed (exit code 1) when training raised."""

    def __init__(self, config: dict, run_dir: Path, project: str, mode: str, resume: bool = False):
        import wandb

        self.run = wandb.init(
            project=project,
            dir=str(run_dir),
            id=run_id(run_dir, resume),
            name=run_dir.name,
            config=config,
            mode=mode,
            # A fresh start has a new id, so "allow" only matters on a resume (offline, wandb says it cannot
            # check the server and writes a new file under the same id; `wandb sync` uploads them in order).
            resume="allow" if resume else None,
            settings=wandb.Settings(**settings_for(mode)),
        )

    def write(self, record: dict) -> None:
        self.run.log(scalars_of(record), step=int(record["step"]))

    def __enter__(self) -> WandbLog:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.run.finish(exit_code=0 if exc_type is None else 1)


def open_wandb(cfg: Any, run_dir: Path, resume: bool = False) -> WandbLog | None:
    """The W&B run ``train.wandb`` asks for, or None; ``cfg`` is the run's Config."""
    if not cfg.train.wandb:
        return None
    require_wandb(True)
    return WandbLog(cfg.to_dict(), run_dir, cfg.train.wandb_project, cfg.train.wandb_mode, resume)
