"""What a config may not be: choices, ranges and the relations between keys, each failure naming its key.

Checked once, right after parsing, so that an impossible setting fails at start with its remedy instead of
as a shape error an hour into training. Only what the config alone can decide lives here; the method's
and the registries' own rules (``method``, ``loss.pred``, ``loss.sparse_form``, the conditioner) are
checked by their owners, which sit above the config and know names it cannot.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from .schema import Config, _flatten


class ConfigError(ValueError):
    """A configuration problem a person has to fix; the message names the key and the remedy."""


def require_choice(key: str, value: str, choices: Iterable[str], remedy: str = "") -> None:
    """A value that must be one of a registry's names (the registries sit above the config and check their
    own keys with this): the error lists the names, the closest one and, if given, the remedy."""
    choices = list(choices)
    if value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        more = f". {remedy}" if remedy else ""
        raise ConfigError(f"config key '{key}' must be one of {', '.join(choices)}; got {value!r}{hint}{more}")


CHOICES: dict[str, tuple[str, ...]] = {
    "data.on_error": ("raise", "skip"),
    "text.cache_dtype": ("fp32", "fp16", "int8"),
    "mask.draw": ("reference", "independent"),
    "mask.truncate": ("min", "pad"),
    "train.precision": ("fp32", "bf16"),
    "train.device": ("auto", "cpu", "cuda"),
    "train.strategy": ("ddp", "fsdp"),
    "train.wandb_mode": ("offline", "online"),
    "train.checkpoint_format": ("full", "sharded"),
}


# The data.name values that read data.path (sources above the config register the names; these need a path).
PATH_SOURCES: dict[str, str] = {
    "jsonl": "a .jsonl file of image paths and captions, or a folder holding captions.jsonl",
    "coco": "a COCO captions annotation file, e.g. annotations/captions_train2017.json",
    "webdataset": "tar shards as a brace pattern, e.g. shards/train-{000000..000009}.tar (weighted: a::0.7,b::0.3)",
}


def _check_data_path(name: str, path: str) -> None:
    if name in PATH_SOURCES:
        _check(
            bool(path.strip()),
            f"config key 'data.path' is required with data.name={name}: pass data.path=PATH, {PATH_SOURCES[name]}",
        )
    else:
        _check(
            not path,
            f"config key 'data.path'={path!r} is set, but data.name={name} does not read files; "
            f"drop data.path or choose a source that reads it ({', '.join(PATH_SOURCES)})",
        )


def cond_layer_indices(cond_layers: str | list[int] | tuple[int, ...], depth: int) -> tuple[int, ...]:
    """The predictor blocks ``model.predictor.cond_layers`` conditions, sorted: "all", "last" or a list of
    block indices in 0..depth-1 (negative ones count from the end, as in Python)."""
    key = "model.predictor.cond_layers"
    if cond_layers == "all":
        return tuple(range(depth))
    if cond_layers == "last":
        return (depth - 1,)
    if isinstance(cond_layers, str) or not all(isinstance(i, int) and not isinstance(i, bool) for i in cond_layers):
        raise ConfigError(
            f"config key '{key}' must be all, last or a list of block indices like [0, 5]; got {cond_layers!r}"
        )
    if not cond_layers:
        raise ConfigError(
            f"config key '{key}' is an empty list; for a predictor without text use model.predictor.conditioning=none"
        )
    bad = [i for i in cond_layers if not -depth <= i < depth]
    if bad:
        raise ConfigError(
            f"config key '{key}' names block(s) {bad}, but the predictor has {depth} blocks "
            f"(model.predictor.depth={depth}); use indices 0..{depth - 1}"
        )
    layers = sorted({i % depth for i in cond_layers})
    if len(layers) != len(cond_layers):
        raise ConfigError(f"config key '{key}' names a block twice: {list(cond_layers)}")
    return tuple(layers)


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _check_range(key: str, pair: tuple[float, float], lo: float = 0.0, hi: float = 1.0) -> None:
    a, b = pair
    _check(lo < a <= b <= hi, f"config key '{key}' must satisfy {lo} < low <= high <= {hi}, got [{a}, {b}]")


def validate(cfg: Config) -> None:
    """Reject impossible settings at start, naming the key."""
    flat = _flatten(cfg.to_dict())
    for key, choices in CHOICES.items():
        _check(flat[key] in choices, f"config key '{key}' must be one of {', '.join(choices)}; got {flat[key]!r}")
    target = cfg.model.target
    _check(
        target == "ema" or (target.startswith("frozen:") and len(target) > len("frozen:")),
        f"config key 'model.target' must be ema or frozen:PATH (PATH: a run folder or an exported encoder "
        f"folder); got {target!r}",
    )
    enc = cfg.model.encoder
    if enc.size == "custom":
        for name in ("embed_dim", "depth", "num_heads"):
            _check(getattr(enc, name) is not None, f"model.encoder.size=custom needs model.encoder.{name}")
    p, s = enc.patch_size, cfg.data.image_size
    _check(p >= 1, f"config key 'model.encoder.patch_size' must be >= 1, got {p}")
    _check(
        s % p == 0,
        f"config key 'data.image_size'={s} is not divisible by 'model.encoder.patch_size'={p}; "
        f"use an image size that is a multiple of {p} (e.g. {max(p, s // p * p)})",
    )
    _check(s // p >= 2, f"data.image_size/patch_size gives a {s // p}x{s // p} grid; need at least 2x2")
    for key in (
        "train.steps",
        "train.batch_size",
        "train.log_every",
        "text.max_len",
        "model.predictor.depth",
        "model.predictor.dim",
        "mask.num_targets",
        "data.train_size",
        "data.image_size",
    ):
        _check(flat[key] >= 1, f"config key '{key}' must be >= 1, got {flat[key]}")
    for key in (
        "text.num_captions",
        "train.ckpt_every",
        "train.keep_every",
        "train.monitor_every",
        "loss.sparse_warmup_steps",
        "data.num_workers",
        "data.epoch_samples",
        "data.shard_window",
        "mask.min_keep",
    ):
        _check(flat[key] >= 0, f"config key '{key}' must be >= 0, got {flat[key]}")
    acc, bs = cfg.train.accum_steps, cfg.train.batch_size
    _check(acc >= 1, f"config key 'train.accum_steps' must be >= 1 (1 = no accumulation), got {acc}")
    _check(
        bs % acc == 0,
        f"config key 'train.batch_size'={bs} is not divisible by 'train.accum_steps'={acc}; the step cuts its "
        f"batch into equal micro-batches, so use a train.batch_size that is a multiple of {acc} "
        f"(e.g. {max(acc, bs // acc * acc)}) or another train.accum_steps",
    )
    _check(
        cfg.train.checkpoint_format != "sharded" or cfg.train.strategy == "fsdp",
        f"config key 'train.checkpoint_format'=sharded needs train.strategy=fsdp (got {cfg.train.strategy!r}): "
        "only FSDP holds the model as shards. Add train.strategy=fsdp, or use train.checkpoint_format=full",
    )
    cond_layer_indices(cfg.model.predictor.cond_layers, cfg.model.predictor.depth)
    _check(cfg.text.max_len >= 3, "config key 'text.max_len' must be >= 3 (two special tokens plus a word)")
    _check(
        1 <= cfg.data.min_objects <= cfg.data.max_objects <= 4,
        "data.min_objects and data.max_objects must satisfy 1 <= min <= max <= 4",
    )
    _check_range("mask.context_scale", cfg.mask.context_scale)
    _check_range("mask.target_scale", cfg.mask.target_scale)
    _check_range("data.crop_scale", cfg.data.crop_scale)
    _check_data_path(cfg.data.name, cfg.data.path)
    _check(
        0.0 <= cfg.data.max_skipped_fraction <= 1.0,
        f"config key 'data.max_skipped_fraction' must be in [0, 1], got {cfg.data.max_skipped_fraction}",
    )
    a, b = cfg.mask.target_aspect
    _check(0 < a <= b, f"config key 'mask.target_aspect' must satisfy 0 < low <= high, got [{a}, {b}]")
    for key in (
        "optim.lr",
        "optim.start_lr",
        "optim.final_lr",
        "optim.weight_decay",
        "optim.final_weight_decay",
        "loss.sparse_weight",
        "loss.consistency_weight",
        "optim.grad_clip",
    ):
        _check(flat[key] >= 0, f"config key '{key}' must be >= 0, got {flat[key]}")
    m0, m1 = cfg.optim.ema
    _check(0 <= m0 <= m1 <= 1, f"config key 'optim.ema' must satisfy 0 <= start <= end <= 1, got [{m0}, {m1}]")
    w = cfg.optim.warmup_steps
    _check(w is None or w >= 0, f"config key 'optim.warmup_steps' must be >= 0 (0 = no warm-up), got {w}")
    f = cfg.optim.warmup_fraction
    _check(0 <= f < 1, f"config key 'optim.warmup_fraction' must satisfy 0 <= fraction < 1, got {f}")
    _check(cfg.loss.sparse_topk >= 1, "config key 'loss.sparse_topk' must be >= 1")
    c = cfg.model.contrastive
    _check(c.embed_dim >= 1, f"config key 'model.contrastive.embed_dim' must be >= 1, got {c.embed_dim}")
    _check(c.text_depth >= 0, f"config key 'model.contrastive.text_depth' must be >= 0, got {c.text_depth}")
    _check(
        cfg.text.encoder in ("minilm", "hashed") or cfg.text.encoder.startswith("hf:"),
        f"config key 'text.encoder' must be minilm, hashed or hf:PATH; got {cfg.text.encoder!r}",
    )
