"""Typed run configuration: YAML presets plus dotted ``key=value`` overrides.

Every key is a dataclass field, so a typo or a wrong type fails at start with the key named (and, for
typos, the closest valid key), instead of silently training the wrong thing for hours.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# Above this share of its random initialisation left (the product of the EMA momenta, ``ema_init_share``) the
# EMA target encoder is flagged wherever it appears: at the start of training, in eval.md and in reports.
EMA_INIT_SHARE_WARN = 0.05


class ConfigError(ValueError):
    """A configuration problem a person has to fix; the message names the key and the remedy."""


@dataclass
class EncoderConfig:
    size: str = "tiny"  # tiny|small|base|large|huge|giant|custom (custom needs the three fields below)
    patch_size: int = 16
    embed_dim: int | None = None  # overrides the size's width
    depth: int | None = None
    num_heads: int | None = None
    mlp_ratio: float | None = None


@dataclass
class PredictorConfig:
    depth: int = 6
    dim: int = 384
    num_heads: int | None = None  # default: the encoder's head count (I-JEPA)
    cond_heads: int | None = None  # heads of the text cross-attention; default: num_heads
    # How text enters the predictor (tcjepa.models.conditioning.CONDITIONERS): words (TC-JEPA's per-word
    # cross-attention) or none (I-JEPA's predictor even when captions are loaded).
    conditioning: str = "words"
    cond_layers: str | list[int] = "all"  # all|last|[block indices]: the blocks that get a conditioner


@dataclass
class ModelConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)


@dataclass
class DataConfig:
    name: str = "shapes"
    image_size: int = 64
    train_size: int = 100_000  # scenes in the training split (shapes is generated, so this is a choice)
    min_objects: int = 1
    max_objects: int = 4
    crop_scale: tuple[float, float] = (1.0, 1.0)  # random-resized-crop area range; (1, 1) = no crop
    num_workers: int = 1
    on_error: str = "raise"  # raise|skip for unreadable samples in real-data formats


@dataclass
class TextConfig:
    encoder: str = "minilm"  # minilm|hashed|hf:PATH
    max_len: int = 32  # tokens including specials
    num_captions: int = 8  # N captions sampled per image per step
    hashed_dim: int = 64
    keep_special: bool = False
    cache_mb: int = 1024
    cache_dir: str | None = None
    cache_dtype: str = "fp16"  # fp32|fp16|int8 for the on-disk cache


@dataclass
class MaskSection:
    context_scale: tuple[float, float] = (0.85, 1.0)
    target_scale: tuple[float, float] = (0.15, 0.2)
    target_aspect: tuple[float, float] = (0.75, 1.5)
    num_targets: int = 4
    min_keep: int = 10
    draw: str = "reference"  # reference|independent: how block sizes are drawn (tcjepa/data/masks.py)
    truncate: str = "min"  # min|pad: cut contexts to the batch's smallest, or pad (tcjepa/data/masks.py)


@dataclass
class LossConfig:
    pred: str = "smooth_l1"  # smooth_l1|l2, on layer-normed EMA targets
    sparse_weight: float = 0.1  # lambda
    consistency_weight: float = 0.5  # beta
    sparse_form: str = "paper"  # paper|mean|margin|topk|entropy|none
    sparse_margin: float = 0.1  # tau for the margin form
    sparse_topk: int = 2  # k for the topk form
    sparse_warmup_steps: int = 0  # linear ramp of lambda and beta from 0
    centred: bool = False  # patch-word cosines on caption-centred keys (see losses/sparsity.py)


@dataclass
class OptimConfig:
    lr: float = 1e-3
    start_lr: float = 2e-4
    final_lr: float = 1e-6
    warmup_steps: int | None = None  # None: warmup_fraction x train.steps; 0: no warm-up
    warmup_fraction: float = 0.1
    weight_decay: float = 0.04
    final_weight_decay: float = 0.4
    betas: tuple[float, float] = (0.9, 0.999)
    # Momentum, linear from start to end over train.steps. The paper's 0.996 suits ~10^5 steps; short runs
    # need a lower start, or the target encoder stays mostly its random init (see ema_init_share).
    ema: tuple[float, float] = (0.996, 1.0)
    grad_clip: float = 0.0  # 0 = off


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 64  # global batch of one optimizer step
    accum_steps: int = 1  # cut each step's batch into this many micro-batches (same gradient, less memory)
    precision: str = "fp32"  # fp32|bf16 (autocast, no GradScaler)
    compile: bool = False
    device: str = "auto"  # auto|cpu|cuda
    log_every: int = 10
    ckpt_every: int = 500
    keep_every: int = 0  # also keep step_<N>.pt every this many steps; 0 = only latest
    monitor_every: int = 100  # RankMe, text usage and other probes on a fixed batch
    online_probe: bool = True  # with the monitors: a cheap linear probe and the pointing game (shapes only)
    threads: int = 0  # torch CPU threads; 0 = leave torch's default


@dataclass
class RunConfig:
    dir: str | None = None
    name: str | None = None


@dataclass
class Config:
    method: str = "tcjepa"  # a name from tcjepa.methods.METHODS (checked there: config sits below the registry)
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    text: TextConfig = field(default_factory=TextConfig)
    mask: MaskSection = field(default_factory=MaskSection)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


CHOICES: dict[str, tuple[str, ...]] = {
    "model.encoder.size": ("tiny", "small", "base", "large", "huge", "giant", "custom"),
    "data.on_error": ("raise", "skip"),
    "text.cache_dtype": ("fp32", "fp16", "int8"),
    "mask.draw": ("reference", "independent"),
    "mask.truncate": ("min", "pad"),
    "train.precision": ("fp32", "bf16"),
    "train.device": ("auto", "cpu", "cuda"),
}


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_to_plain(v) for v in value]
    return value


def all_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted leaf key of the config, e.g. ``train.steps``."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            keys += all_keys(t, f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def _unknown_key(key: str) -> ConfigError:
    close = difflib.get_close_matches(key, all_keys(), n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else " Run `tcjepa pretrain --help-config` for the list."
    return ConfigError(f"unknown config key '{key}'.{hint}")


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against the field's annotation; return it in the annotated type."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        for arg in args[:-1]:  # the first member the value fits, e.g. "last" or [0, 5] for str | list[int]
            with contextlib.suppress(ConfigError):
                return _coerce(key, value, arg)
        return _coerce(key, value, args[-1])
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise ConfigError(
                f"config key '{key}' expects a list of {len(args)} numbers like [0.85, 1.0], got {value!r}"
            )
        return tuple(_coerce(f"{key}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args)))
    if origin is list:
        (arg,) = typing.get_args(hint)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"config key '{key}' expects a list, got {value!r}")
        return [_coerce(f"{key}[{i}]", v, arg) for i, v in enumerate(value)]
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}' expects true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"config key '{key}' expects an integer, got {value!r}")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"config key '{key}' expects a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)  # e.g. run.name=2024
        raise ConfigError(f"config key '{key}' expects a string, got {value!r}")
    raise ConfigError(f"config key '{key}' has an unsupported type {hint}")  # pragma: no cover


def _set(cfg: Any, key: str, value: Any, full_key: str) -> None:
    head, _, rest = key.partition(".")
    hints = typing.get_type_hints(type(cfg))
    if head not in hints:
        raise _unknown_key(full_key)
    hint = hints[head]
    if rest:
        if not dataclasses.is_dataclass(hint):
            raise _unknown_key(full_key)
        _set(getattr(cfg, head), rest, value, full_key)
        return
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{full_key}' is a section; set its fields, e.g. '{full_key}.<field>=...'")
        for k, v in value.items():
            _set(getattr(cfg, head), str(k), v, f"{full_key}.{k}")
        return
    setattr(cfg, head, _coerce(full_key, value, hint))


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b=1e-3`` -> ("a.b", 0.001); values are read as YAML scalars/lists."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value (e.g. train.steps=100)")
    key, _, raw = text.partition("=")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot read the value of override '{text}': {e}") from None
    # YAML reads 1e-3 as a string; accept scientific notation for numbers.
    if isinstance(value, str) and any(c in value for c in ".eE"):
        with contextlib.suppress(ValueError):
            value = float(value)
    return key.strip(), value


PRESET_DIR = Path(__file__).parent / "configs"


def presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def resolve_preset(path: str | Path) -> Path:
    """A YAML path, or the name of a shipped preset (``demo``, ``cpu-small``, ...)."""
    p = Path(path)
    if p.is_file():
        return p
    named = PRESET_DIR / f"{p.name.removesuffix('.yaml')}.yaml"
    if p.parent in (Path("."), Path("configs")) and named.is_file():
        return named
    raise ConfigError(f"config file '{path}' does not exist; shipped presets: {', '.join(presets())}")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file, then ``key=value`` overrides, then validation."""
    cfg = Config()
    if path is not None:
        path = resolve_preset(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file '{path}' is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file '{path}' must hold a mapping of keys, got {type(data).__name__}")
        for key, value in _flatten(data).items():
            _set(cfg, key, value, key)
    for text in overrides or []:
        key, value = parse_override(text)
        _set(cfg, key, value, key)
    validate(cfg)
    return cfg


def config_from_dict(data: dict[str, Any]) -> Config:
    cfg = Config()
    for key, value in _flatten(data).items():
        _set(cfg, key, value, key)
    validate(cfg)
    return cfg


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
    cond_layer_indices(cfg.model.predictor.cond_layers, cfg.model.predictor.depth)
    _check(cfg.text.max_len >= 3, "config key 'text.max_len' must be >= 3 (two special tokens plus a word)")
    _check(
        1 <= cfg.data.min_objects <= cfg.data.max_objects <= 4,
        "data.min_objects and data.max_objects must satisfy 1 <= min <= max <= 4",
    )
    _check_range("mask.context_scale", cfg.mask.context_scale)
    _check_range("mask.target_scale", cfg.mask.target_scale)
    _check_range("data.crop_scale", cfg.data.crop_scale)
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
    _check(
        cfg.text.encoder in ("minilm", "hashed") or cfg.text.encoder.startswith("hf:"),
        f"config key 'text.encoder' must be minilm, hashed or hf:PATH; got {cfg.text.encoder!r}",
    )
