"""Reading run folders back: the resolved config, the trained method, the encoder users evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from ..config import Config, config_from_dict, load_config
from ..data.caption_store import check_store_config
from ..data.sources import check_data_config
from ..export import export_encoder, is_exported_encoder, load_encoder
from ..methods import build_method, check_config
from ..train.checkpoint import latest_checkpoint, load_checkpoint


def load_checked_config(path: str | Path | None, overrides: list[str]) -> Config:
    """A config to train: parsed and validated, then checked by the registries config cannot see (the
    method's own rules and names, the dataset name), so a typo fails before anything trains."""
    cfg = load_config(path, overrides)
    check_config(cfg)
    check_data_config(cfg)
    check_store_config(cfg)
    return cfg


def load_run_config(run_dir: str | Path) -> Config:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a tcjepa run folder: {path} is missing")
    return config_from_dict(yaml.safe_load(path.read_text()))


def checkpoint_step(run_dir: str | Path) -> int | None:
    """Step of the run's latest checkpoint, or None when it has none."""
    path = latest_checkpoint(Path(run_dir) / "checkpoints")
    if path.name == "latest.dcp":  # sharded: the step is in the small non-tensor file
        from ..train.checkpoint import read_meta

        return int(read_meta(path)["step"])
    return int(load_checkpoint(path)["step"]) if path.is_file() else None


def build_untrained(cfg: Config, seed: int | None = None) -> torch.nn.Module:
    """The method exactly as training would start it: the random-init floor for every probe."""
    torch.manual_seed(cfg.seed if seed is None else seed)
    return build_method(cfg)


def load_run_method(run_dir: str | Path, map_location: str | torch.device = "cpu") -> tuple[Config, torch.nn.Module]:
    cfg = load_run_config(run_dir)
    # latest.pt, or a sharded run's latest.dcp folder assembled into whole tensors here (no process group)
    path = latest_checkpoint(Path(run_dir) / "checkpoints")
    state = load_checkpoint(path, map_location=map_location, with_optimizer=False)
    method = build_untrained(cfg)
    method.load_state_dict(state["method"])
    return cfg, method.eval()


def load_run_encoder(run_dir: str | Path) -> tuple[Config, torch.nn.Module]:
    """The encoder downstream users get (``method.encoder``): the EMA target encoder, or the context encoder
    of a frozen-teacher run (``model.target=frozen:PATH``, whose teacher did not learn)."""
    cfg, method = load_run_method(run_dir)
    return cfg, method.encoder


def is_run_dir(path: str | Path) -> bool:
    latest = latest_checkpoint(Path(path) / "checkpoints")
    return (Path(path) / "config.yaml").is_file() and (latest.is_file() or latest.is_dir())


ENCODERS = ("target", "context")


def has_context_encoder(method) -> bool:
    """JEPA methods with an EMA target train a context encoder beside it: a second encoder to evaluate. A
    frozen-teacher run has none beside ``method.encoder``, which already is its context encoder."""
    return method.has_ema_target


def logged_ema_init_share(run_dir: str | Path, step: int | None = None) -> float | None:
    """``ema_init_share`` of the last metrics.jsonl record before ``step`` (the checkpoint), None if not logged.

    Records past the checkpoint (logged before a crash that lost the next checkpoint) do not describe the
    weights being evaluated, so they are skipped; a torn last line is skipped too.
    """
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return None
    for line in reversed(path.read_text().splitlines()):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict) or (step is not None and record.get("step", -1) >= step):
            continue
        value = record.get("ema_init_share")
        return None if value is None else float(value)
    return None


def eval_target(path: str | Path, encoder: str = "target"):
    """An :class:`~tcjepa.eval.suite.EvalTarget` from a run folder or an exported encoder folder.

    ``encoder="target"`` reads the EMA target encoder (``method.encoder``, what downstream users get);
    ``"context"`` reads the JEPA context encoder, which gradient descent trains directly: the one to look
    at when the EMA target is still largely its random initialisation (see ``ema_init_share``). For a
    frozen-teacher run (``method.frozen_target``) both read the context encoder, recorded as such in
    ``info``: the teacher did not learn, it is the run it came from that evaluates it.
    """
    from ..data.captions import build_caption_cache
    from ..eval.suite import EvalTarget

    if encoder not in ENCODERS:
        raise ValueError(f"encoder={encoder!r} is not an encoder to evaluate; choose one of {', '.join(ENCODERS)}")
    path = Path(path)
    if is_run_dir(path):
        cfg, method = load_run_method(path)
        if encoder == "context":
            if not (has_context_encoder(method) or method.frozen_target):
                raise ValueError(
                    f"{path}: method {cfg.method!r} ({type(method).__name__}) has no context_encoder to evaluate; "
                    "use --encoder target"
                )
            module = method.context_encoder
        else:
            module = method.encoder
        # Word states for the pointing game (grounded methods) and the text tower (contrastive ones).
        reads_text = method.text_conditioned or method.contrastive
        cache = build_caption_cache(cfg) if reads_text else None
        step = checkpoint_step(path)
        info = {"method": cfg.method, "data": cfg.data.name, "step": step, "run": str(path), "encoder": encoder}
        if method.frozen_target:  # method.encoder is the context encoder: say so in eval.json / eval.md
            info.update(encoder="context", frozen_teacher=cfg.model.target.removeprefix("frozen:"))
        if method.has_ema_target:  # the share of the random init left in the EMA target: none without one
            info["ema_init_share"] = logged_ema_init_share(path, step)
        name = path.name if encoder == "target" else f"{path.name} (context encoder)"
        return EvalTarget(module, cfg.data.image_size, name, method, cache, info)
    if is_exported_encoder(path):
        if encoder != "target":
            raise ValueError(
                f"{path} is an exported encoder (the run's EMA target encoder only); --encoder {encoder} needs "
                "the run folder it was exported from"
            )
        loaded = load_encoder(path)
        info = {"exported_encoder": str(path), "encoder": "target"}
        return EvalTarget(loaded, loaded.spec.image_size, path.name, info=info)
    raise FileNotFoundError(
        f"{path} is neither a tcjepa run folder (config.yaml + checkpoints/latest.pt or latest.dcp) nor an exported "
        "encoder (model.safetensors + config.json)"
    )


def untrained_target(cfg: Config, seed: int | None = None):
    """The random-init floor: the encoder exactly as training would start it, never trained."""
    from ..eval.suite import EvalTarget

    seed = cfg.seed if seed is None else seed
    method = build_untrained(cfg, seed)
    info = {"method": "random-init", "encoder": "target"}
    return EvalTarget(method.encoder, cfg.data.image_size, f"random-init-seed{seed}", info=info)


def export_run(run_dir: str | Path, out: str | Path) -> Path:
    """Export the encoder users get from a run folder's latest checkpoint (``method.encoder``): the EMA target
    encoder, or the context encoder of a frozen-teacher run (``config.json`` says which under ``encoder``)."""
    cfg, method = load_run_method(run_dir)
    encoder = method.encoder
    meta = {"method": cfg.method, "run": str(Path(run_dir).resolve()), "step": checkpoint_step(run_dir)}
    if method.frozen_target:
        meta.update(encoder="context", frozen_teacher=cfg.model.target.removeprefix("frozen:"))
    return export_encoder(encoder, out, meta)
