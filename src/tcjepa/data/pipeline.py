"""The pretraining stream: the batch of step ``s`` is a pure function of (seed, s).

Images, caption sampling and masks each draw from generators seeded by (seed, step, stream id),
so a run resumed at step s sees exactly the batches it would have seen, whatever the number of
workers. Caption word states are looked up (and, on a miss, computed) inside the data worker, so
the frozen text encoder overlaps with the training step instead of adding to it.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..config import Config
from .captions import CaptionCache, sample_captions, usable_captions
from .masks import MaskConfig, MultiBlockMaskSampler
from .transforms import random_resized_crop_counted

STREAM_IMAGES, STREAM_CAPTIONS, STREAM_MASKS = 1, 2, 3


def step_generator(seed: int, step: int, stream: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, step, stream]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def build_dataset(cfg: Config, split: str = "train", size: int | None = None) -> Dataset:
    if cfg.data.name == "shapes":
        from .shapes import ShapesDataset

        if split == "train" and size is None:
            size = cfg.data.train_size
        return ShapesDataset(
            split=split,
            image_size=cfg.data.image_size,
            seed=cfg.seed,
            size=size,
            min_objects=cfg.data.min_objects,
            max_objects=cfg.data.max_objects,
        )
    raise ValueError(f"data.name must be 'shapes'; got {cfg.data.name!r}")


def text_dim_for(cfg: Config) -> int:
    """Width of the text encoder's word states, without loading weights where it is known."""
    if cfg.text.encoder == "minilm":
        return 384
    if cfg.text.encoder == "hashed":
        return cfg.text.hashed_dim
    return build_caption_cache(cfg).encoder.dim


def build_caption_cache(cfg: Config) -> CaptionCache:
    from ..models.text import build_text_encoder

    t = cfg.text
    encoder = build_text_encoder(t.encoder, max_len=t.max_len, keep_special=t.keep_special, dim=t.hashed_dim)
    return CaptionCache(encoder, max_bytes=t.cache_mb << 20, disk_dir=t.cache_dir, disk_dtype=t.cache_dtype)


def mask_sampler_for(cfg: Config) -> MultiBlockMaskSampler:
    m = cfg.mask
    grid = cfg.data.image_size // cfg.model.encoder.patch_size
    return MultiBlockMaskSampler(
        grid,
        MaskConfig(m.context_scale, m.target_scale, m.target_aspect, m.num_targets, m.min_keep, m.draw, m.truncate),
    )


class PretrainStream(Dataset):
    """Map-style over steps: ``stream[s]`` is the whole (per-rank) batch of step ``s``."""

    def __init__(self, cfg: Config, with_text: bool, rank: int = 0, world_size: int = 1):
        if cfg.train.batch_size % world_size:
            raise ValueError(f"train.batch_size={cfg.train.batch_size} is not divisible by {world_size} processes")
        self.cfg = cfg
        self.with_text = with_text
        self.rank, self.world_size = rank, world_size
        self.local_batch = cfg.train.batch_size // world_size
        self.dataset = build_dataset(cfg, "train")
        self.masks = mask_sampler_for(cfg)
        self._perm: tuple[int, np.ndarray] | None = None
        self._cache: CaptionCache | None = None  # built lazily, in the process that uses it

    def __len__(self) -> int:
        return self.cfg.train.steps

    @property
    def cache(self) -> CaptionCache:
        if self._cache is None:
            self._cache = build_caption_cache(self.cfg)
        return self._cache

    def indices(self, step: int) -> list[int]:
        """Dataset indices of this rank's share of step ``step``: epochs are seeded permutations."""
        n, gb = len(self.dataset), self.cfg.train.batch_size
        out = []
        start = step * gb + self.rank * self.local_batch
        for pos in range(start, start + self.local_batch):
            epoch, offset = divmod(pos, n)
            if self._perm is None or self._perm[0] != epoch:
                self._perm = (epoch, np.random.default_rng([self.cfg.seed, epoch, 7]).permutation(n))
            out.append(int(self._perm[1][offset]))
        return out

    def __getitem__(self, step: int) -> dict:
        t0 = time.perf_counter()
        seed = self.cfg.seed
        gens = (
            step_generator(seed, step, STREAM_IMAGES),
            step_generator(seed, step, STREAM_CAPTIONS),
            step_generator(seed, step * self.world_size + self.rank, STREAM_MASKS),
        )
        samples = [self.dataset[i] for i in self.indices(step)]
        batch = assemble_batch(samples, self.cfg, self.masks, gens, self.cache if self.with_text else None)
        batch["step"] = step
        batch["stats"]["data_ms"] = 1000 * (time.perf_counter() - t0)
        return batch


def assemble_batch(
    samples: list[dict],
    cfg: Config,
    masks: MultiBlockMaskSampler,
    gens: tuple[torch.Generator, torch.Generator, torch.Generator],
    cache: CaptionCache | None,
    crop: bool = True,
) -> dict:
    """Images (optionally cropped), masks and, with a cache, N sampled captions per image as word states.

    ``stats`` counts what would otherwise pass silently: crops that fell back to the full image, mask
    fallback placements, images without any usable caption, and captions dropped as empty or duplicate.
    """
    g_img, g_cap, g_mask = gens
    scale = cfg.data.crop_scale if crop else (1.0, 1.0)
    cropped = [random_resized_crop_counted(s["image"], scale, g_img) for s in samples]
    images = torch.stack([image for image, _ in cropped])
    mask_batch = masks(len(samples), g_mask)
    batch: dict = {
        "images": images,
        "mask_context": mask_batch.context,
        "mask_targets": mask_batch.targets,
        "stats": {**mask_batch.stats, "crop_fallback_images": float(sum(fell for _, fell in cropped))},
    }
    if mask_batch.context_valid is not None:  # mask.truncate=pad
        batch["mask_context_valid"] = mask_batch.context_valid
    if cache is not None:
        n = cfg.text.num_captions
        sampled = [sample_captions(s["captions"], n, g_cap) for s in samples]
        hits, misses = cache.stats["hits"], cache.stats["misses"]
        batch.update(cache.batch(sampled, n))
        batch["captions"] = sampled
        usable = batch["caption_mask"].sum(1)  # after the encoder: a caption without tokens is absent too
        unique = [len(usable_captions(s["captions"])) for s in samples]
        batch["stats"]["captions_captionless"] = float((usable == 0).sum())
        batch["stats"]["captions_dropped"] = float(
            sum(len(s["captions"]) - u for s, u in zip(samples, unique))
            + sum(len(c) for c in sampled)
            - int(usable.sum())
        )
        new_hits = cache.stats["hits"] - hits
        batch["stats"]["text_cache_hit_rate"] = new_hits / max(1, new_hits + cache.stats["misses"] - misses)
    return batch


def heldout_batch(cfg: Config, n: int, cache: CaptionCache | None, split: str = "val") -> dict:
    """A fixed batch from a held-out split (same masks and captions every call), for monitors."""
    ds = build_dataset(cfg, split, size=max(n, 1))
    gens = tuple(step_generator(cfg.seed, 0, 100 + s) for s in range(3))
    batch = assemble_batch([ds[i] for i in range(n)], cfg, mask_sampler_for(cfg), gens, cache, crop=False)
    batch["step"] = 0
    return batch


def pretrain_loader(stream: PretrainStream, start_step: int, num_workers: int) -> DataLoader:
    """One item per step, starting at ``start_step``; order and content do not depend on ``num_workers``."""
    return DataLoader(
        stream,
        batch_size=None,
        sampler=range(start_step, len(stream)),
        num_workers=num_workers,
        prefetch_factor=2 if num_workers else None,
        persistent_workers=False,
        collate_fn=_as_is,
    )


def _as_is(batch: dict) -> dict:
    return batch


TENSOR_KEYS = ("images", "mask_context", "mask_context_valid", "mask_targets", "text", "text_mask", "caption_mask")


def to_device(batch: dict, device: torch.device) -> dict:
    out = dict(batch)
    for k in TENSOR_KEYS:
        if k in out:
            out[k] = out[k].to(device, non_blocking=True)
    return out
