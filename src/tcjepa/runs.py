"""Reading run folders back: the resolved config, the trained method, the encoder users evaluate."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from .config import Config, config_from_dict
from .data.pipeline import text_dim_for
from .methods import build_method
from .train.checkpoint import load_checkpoint


def load_run_config(run_dir: str | Path) -> Config:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a tcjepa run folder: {path} is missing")
    return config_from_dict(yaml.safe_load(path.read_text()))


def checkpoint_step(run_dir: str | Path) -> int | None:
    """Step of the run's latest checkpoint, or None when it has none."""
    path = Path(run_dir) / "checkpoints" / "latest.pt"
    return int(load_checkpoint(path)["step"]) if path.is_file() else None


def build_untrained(cfg: Config, seed: int | None = None) -> torch.nn.Module:
    """The method exactly as training would start it: the random-init floor for every probe."""
    torch.manual_seed(cfg.seed if seed is None else seed)
    return build_method(cfg, text_dim_for(cfg) if cfg.method == "tcjepa" else None)


def load_run_method(run_dir: str | Path, map_location: str | torch.device = "cpu") -> tuple[Config, torch.nn.Module]:
    cfg = load_run_config(run_dir)
    state = load_checkpoint(Path(run_dir) / "checkpoints" / "latest.pt", map_location=map_location)
    method = build_untrained(cfg)
    method.load_state_dict(state["method"])
    return cfg, method.eval()


def load_run_encoder(run_dir: str | Path) -> tuple[Config, torch.nn.Module]:
    """The EMA target encoder of a trained run (what downstream users get)."""
    cfg, method = load_run_method(run_dir)
    return cfg, method.encoder


def is_run_dir(path: str | Path) -> bool:
    return (Path(path) / "config.yaml").is_file() and (Path(path) / "checkpoints" / "latest.pt").is_file()


def eval_target(path: str | Path):
    """An :class:`~tcjepa.eval.suite.EvalTarget` from a run folder or an exported encoder folder."""
    from .data.pipeline import build_caption_cache
    from .eval.suite import EvalTarget
    from .export import is_exported_encoder, load_encoder

    path = Path(path)
    if is_run_dir(path):
        cfg, method = load_run_method(path)
        cache = build_caption_cache(cfg) if getattr(method, "needs_text", False) else None
        info = {"method": cfg.method, "step": checkpoint_step(path), "run": str(path)}
        return EvalTarget(method.encoder, cfg.data.image_size, path.name, method, cache, info)
    if is_exported_encoder(path):
        encoder = load_encoder(path)
        return EvalTarget(encoder, encoder.spec.image_size, path.name, info={"encoder": str(path)})
    raise FileNotFoundError(
        f"{path} is neither a tcjepa run folder (config.yaml + checkpoints/latest.pt) nor an exported encoder "
        "(model.safetensors + config.json)"
    )


def untrained_target(cfg: Config, seed: int | None = None):
    """The random-init floor: the encoder exactly as training would start it, never trained."""
    from .eval.suite import EvalTarget

    seed = cfg.seed if seed is None else seed
    method = build_untrained(cfg, seed)
    return EvalTarget(method.encoder, cfg.data.image_size, f"random-init-seed{seed}", info={"method": "random-init"})
