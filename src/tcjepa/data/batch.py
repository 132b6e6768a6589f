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
    gens: tuple[torch.Generator, torch.Generator, torch.Generator],
    cache: CaptionCache | None,
    crop: bool = True,
) -> dict:
    """Images (optionally cropped), then what ``spec`` asks for: masks, and N sampled captions per image
    as word states (``spec.text="states"``, read through ``cache``).

    ``stats`` counts what would otherwise pass silently: crops that fell back to the full image, mask
    fallback placements, images without any usable caption, and captions dropped as empty or duplicate.
    """
    g_img, g_cap, g_mask = gens
    scale = cfg.data.crop_scale if crop else (1.0, 1.0)
    cropped = [random_resized_crop_counted(s["image"], scale, g_img) for s in samples]
    batch: dict = {
        "images": torch.stack([image for image, _ in cropped]),
        "stats": {"crop_fallback_images": float(sum(fell for _, fell in cropped))},
    }
    if spec.masks:
        mask_batch = masks(len(samples), g_mask)
        batch["mask_context"], batch["mask_targets"] = mask_batch.context, mask_batch.targets
        batch["stats"].update(mask_batch.stats)
        if mask_batch.context_valid is not None:  # mask.truncate=pad
            batch["mask_context_valid"] = mask_batch.context_valid
    if spec.text == "tokens":
        raise ValueError(
            "BatchSpec.text='tokens' (token ids for a trainable text tower) is not built by tcjepa.data.batch yet; "
            "add it to assemble_batch or declare text='states'"
        )
    if spec.text == "states":
        if cache is None:
            raise ValueError("BatchSpec.text='states' needs a CaptionCache (tcjepa.data.captions.build_caption_cache)")
        _add_captions(batch, samples, spec.captions, g_cap, cache)
    return batch


def _add_captions(batch: dict, samples: list[dict], n: int, g_cap: torch.Generator, cache: CaptionCache) -> None:
    """N sampled captions per image, their word states, masks and the caption counters."""
    sampled = [sample_captions(s["captions"], n, g_cap) for s in samples]
    hits, misses = cache.stats["hits"], cache.stats["misses"]
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


TENSOR_KEYS = ("images", "mask_context", "mask_context_valid", "mask_targets", "text", "text_mask", "caption_mask")


def to_device(batch: dict, device: torch.device) -> dict:
    out = dict(batch)
    for k in TENSOR_KEYS:
        if k in out:
            out[k] = out[k].to(device, non_blocking=True)
    return out
