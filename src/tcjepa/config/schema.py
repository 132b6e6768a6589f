"""The config's shape: one dataclass per section, each field with its default and what it means.

Every key is a dataclass field, so a typo or a wrong type fails at start with the key named (and, for
typos, the closest valid key), instead of silently training the wrong thing for hours. This module holds
only the shape and its defaults; reading YAML and overrides into it is :mod:`.parse`, rejecting impossible
values is :mod:`.checks`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import yaml

# Above this share of its random initialisation left (the product of the EMA momenta, ``ema_init_share``) the
# EMA target encoder is flagged wherever it appears: at the start of training, in eval.md and in reports.
EMA_INIT_SHARE_WARN = 0.05


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
    # cross-attention), caption, adaln, input, sequence (docs/design.md §4.3) or none (I-JEPA's predictor
    # even when captions are loaded).
    conditioning: str = "words"
    cond_layers: str | list[int] = "all"  # all|last|[block indices]: the blocks that get a conditioner
    caption_fusion: str = "max"  # max|mean|attention over the per-caption updates (words only)


@dataclass
class ContrastiveConfig:
    """The two towers' heads of the contrastive baselines (method=clip|siglip); JEPA methods ignore it."""

    embed_dim: int = 128  # width of the shared image-text space
    text_depth: int = 1  # transformer blocks over the frozen word states (0: pool the states directly)
    text_width: int | None = None  # default: the image encoder's width
    text_heads: int | None = None  # default: the image encoder's head count


@dataclass
class ModelConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    # Where the JEPA methods' prediction targets come from (docs/design.md §4.16): ema (the EMA of the context
    # encoder) or frozen:PATH (a previously trained encoder, never updated: a run folder or a `tcjepa export`
    # folder). With frozen:PATH the context encoder is the encoder evaluated and exported.
    target: str = "ema"


@dataclass
class DataConfig:
    name: str = "shapes"
    # The file or folder a real-data source reads (jsonl: a .jsonl file or a folder with captions.jsonl;
    # coco: a captions_*.json annotation file; webdataset: tar shards, a brace pattern and optional weighted
    # sources, tcjepa/data/shard_paths.py); tcjepa/data/caption_index.py gives the rules.
    path: str = ""
    image_size: int = 64
    train_size: int = 100_000  # scenes in the training split (shapes only: real data has the split it has)
    min_objects: int = 1
    max_objects: int = 4
    crop_scale: tuple[float, float] = (1.0, 1.0)  # random-resized-crop area range; (1, 1) = no crop
    num_workers: int = 1
    on_error: str = "skip"  # raise|skip for unreadable samples in real-data formats (skip: replaced, counted)
    max_skipped_fraction: float = 0.05  # with skip: stop the run when more of the images seen were unreadable
    # webdataset only (tcjepa/data/shards.py): draw samples with replacement, by source weight, in virtual
    # epochs of epoch_samples (0: the split's size); otherwise shard_window shards mix per window (0: all).
    resampled: bool = False
    epoch_samples: int = 0
    shard_window: int = 0


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
    store: str | None = None  # a caption store from `tcjepa data embed-captions` (word states pre-computed)


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
    strategy: str = "ddp"  # ddp|fsdp under torchrun (several processes); ignored in one process
    # full: one file of whole tensors written by rank 0 (latest.pt); sharded (fsdp only): a torch.distributed
    # .checkpoint folder each rank writes its own shards into (latest.dcp), for models too large to gather
    checkpoint_format: str = "full"
    # Recompute each transformer block's activations in backward instead of storing them (context encoder and
    # predictor): less memory, about one more forward of compute, the same numbers.
    activation_checkpointing: bool = False
    tensorboard: bool | None = None  # event files beside metrics.jsonl; None: on when tensorboard is installed
    wandb: bool = False  # a Weights & Biases copy of metrics.jsonl in <run_dir>/wandb (pip install 'tcjepa[wandb]')
    wandb_project: str = "tcjepa"
    wandb_mode: str = "offline"  # offline (files only; `wandb sync` later) | online (needs network and a login)


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


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_to_plain(v) for v in value]
    return value


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out
