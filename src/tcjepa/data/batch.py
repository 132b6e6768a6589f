"""Batch assembly: samples of one step -> the batch dict a method reads (docs/design.md §3).

A method declares the fields it reads as a :class:`BatchSpec`; assembly builds those and nothing else.
The spec lives here, below ``methods/``, because the data layer must know it without importing the
trainer's side (``methods.base`` re-exports it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import Config
from .captions import CaptionCache, sample_captions, usable_captions
from .keys import BatchKeys
from .masks import MaskConfig, MultiBlockMaskSampler
from .transforms import random_resized_crop_counted

TEXT_KINDS = ("none", "states", "tokens")


@dataclass(frozen=True)
class BatchSpec:
    """The batch fields a method reads; the stream builds only these."""

    masks: bool = True  # multi-block context / target indices (mask_context, mask_targets)
    text: str = "none"  # none | states (frozen word states) | tokens (token ids for a trainable text tower)
    captions: int = 0  # captions per image when text != none

    def __post_init__(self) -> None:
        if self.text not in TEXT_KINDS:
            raise ValueError(f"BatchSpec.text must be one of {', '.join(TEXT_KINDS)}; got {self.text!r}")
        if (self.text == "none") != (self.captions == 0):
            raise ValueError(f"BatchSpec: captions={self.captions} does not fit text={self.text!r}")


def text_spec(cfg: Config) -> BatchSpec:
    """Masks and ``text.num_captions`` captions' word states: the fields every text-conditioned method reads."""
    return BatchSpec(masks=True, text="states", captions=cfg.text.num_captions)


def mask_sampler_for(cfg: Config) -> MultiBlockMaskSampler:
    m = cfg.mask
    grid = cfg.data.image_size // cfg.model.encoder.patch_size
    return MultiBlockMaskSampler(
        grid,
        MaskConfig(m.context_scale, m.target_scale, m.target_aspect, m.num_targets, m.min_keep, m.draw, m.truncate),
    )


def assemble_batch(
    samples: list[dict],
    cfg: Config,
    spec: BatchSpec,
    masks: MultiBlockMaskSampler,
    keys: BatchKeys,
    cache: CaptionCache | None,
    crop: bool = True,
) -> dict:
    """Images (optionally cropped), then what ``spec`` asks for: masks, and N sampled captions per image
    as word states (``spec.text="states"``, read through ``cache``).

    ``samples`` are rows ``keys.first ..`` of the step's global batch; every draw is keyed so that these
    rows come out the same whichever way the global batch is split (``keys.py``). ``stats`` counts what
    would otherwise pass silently: crops that fell back to the full image, images without any usable
    caption, captions dropped as empty or duplicate (these three are counts over this batch's rows, so
    ranks sum), and the mask sampler's counters (those describe the whole global batch, the same on
    every rank).
    """
    scale = cfg.data.crop_scale if crop else (1.0, 1.0)
    if scale[0] < 1.0:
        cropped = [random_resized_crop_counted(s["image"], scale, keys.crop(k)) for k, s in enumerate(samples)]
    else:  # no crop: no generator to build
        cropped = [(s["image"], False) for s in samples]
    batch: dict = {
        "images": torch.stack([image for image, _ in cropped]),
        "stats": {"crop_fallback_images": float(sum(fell for _, fell in cropped))},
    }
    if spec.masks:
        _add_masks(batch, masks, keys, len(samples))
    if spec.text == "tokens":
        raise ValueError(
            "BatchSpec.text='tokens' (token ids for a trainable text tower) is not built by tcjepa.data.batch yet; "
            "add it to assemble_batch or declare text='states'"
        )
    if spec.text == "states":
        if cache is None:
            raise ValueError("BatchSpec.text='states' needs a CaptionCache (tcjepa.data.captions.build_caption_cache)")
        _add_captions(batch, samples, spec.captions, keys, cache)
    return batch


def _add_masks(batch: dict, masks: MultiBlockMaskSampler, keys: BatchKeys, n: int) -> None:
    """This batch's rows of the masks drawn for the whole global batch (cut or padded to its extremes)."""
    if not 0 <= keys.first <= keys.first + n <= keys.global_batch:
        raise ValueError(f"rows {keys.first}..{keys.first + n} do not fit a global batch of {keys.global_batch}")
    drawn = masks(keys.global_batch, keys.masks())
    rows = slice(keys.first, keys.first + n)
    batch["mask_context"], batch["mask_targets"] = drawn.context[rows], drawn.targets[rows]
    batch["stats"].update(drawn.stats)
    if drawn.context_valid is not None:  # mask.truncate=pad
        batch["mask_context_valid"] = drawn.context_valid[rows]


def _add_captions(batch: dict, samples: list[dict], n: int, keys: BatchKeys, cache: CaptionCache) -> None:
    """N sampled captions per image, their word states, masks and the caption counters."""
    sampled = [sample_captions(s["captions"], n, keys.captions(k)) for k, s in enumerate(samples)]
    hits, misses, store_misses = cache.stats["hits"], cache.stats["misses"], cache.stats["store_misses"]
    batch.update(cache.batch(sampled, n))
    batch["captions"] = sampled
    usable = batch["caption_mask"].sum(1)  # after the encoder: a caption without tokens is absent too
    unique = [len(usable_captions(s["captions"])) for s in samples]
    batch["stats"]["captions_captionless"] = float((usable == 0).sum())
    batch["stats"]["captions_dropped"] = float(
        sum(len(s["captions"]) - u for s, u in zip(samples, unique)) + sum(len(c) for c in sampled) - int(usable.sum())
    )
    new_hits = cache.stats["hits"] - hits
    batch["stats"]["text_cache_hit_rate"] = new_hits / max(1, new_hits + cache.stats["misses"] - misses)
    if cache.store is not None:  # sentences the store lacks were encoded on the fly: say how many
        batch["stats"]["text_store_misses"] = float(cache.stats["store_misses"] - store_misses)


TENSOR_KEYS = ("images", "mask_context", "mask_context_valid", "mask_targets", "text", "text_mask", "caption_mask")
WORD_AXIS_KEYS = ("text", "text_mask")  # (B, N, S, ...): S is the longest caption of the batch it was built for


def concat_batches(parts: list[dict]) -> dict:
    """The batch that ``parts`` (e.g. every rank's share of a step, in rank order) make together.

    Tensors are joined along the batch axis and captions listed in order. Each part pads the word axis
    only to its own longest caption (a rank never sees the others' captions), so parts are first padded
    to the widest, with zero states and False in ``text_mask``, which is exactly the one-process batch's
    padding. ``stats`` are left out: which counters add up across parts is the caller's choice.
    """
    if not parts:
        raise ValueError("concat_batches needs at least one batch")
    out: dict = {}
    for key in TENSOR_KEYS:
        if key not in parts[0]:
            continue
        tensors = [p[key] for p in parts]
        if key in WORD_AXIS_KEYS:
            width = max(t.shape[2] for t in tensors)
            tensors = [_pad_words(t, width) for t in tensors]
        out[key] = torch.cat(tensors)
    if "captions" in parts[0]:
        out["captions"] = [c for p in parts for c in p["captions"]]
    if "step" in parts[0]:
        out["step"] = parts[0]["step"]
    return out


def _pad_words(t: torch.Tensor, width: int) -> torch.Tensor:
    pad = t.new_zeros((*t.shape[:2], width - t.shape[2], *t.shape[3:]))
    return torch.cat([t, pad], dim=2)


def to_device(batch: dict, device: torch.device) -> dict:
    out = dict(batch)
    for k in TENSOR_KEYS:
        if k in out:
            out[k] = out[k].to(device, non_blocking=True)
    return out
