"""The pretraining stream: the batch of step ``s`` is a pure function of (seed, s), whatever the split.

``PretrainStream(cfg, spec, rank, world_size)[s]`` is rank ``rank``'s rows of step ``s``'s global batch
(``train.batch_size`` samples). Every draw is keyed by the step and the sample's global position
(``keys.py``), so the ranks' batches concatenated along the batch equal the one-process batch exactly, a
run resumed at step s sees the batches it would have seen, and the number of loader workers changes
nothing. Caption word states are looked up (and, on a miss, computed) inside the data worker, so the
frozen text encoder overlaps with the training step instead of adding to it.
"""

from __future__ import annotations

import time

import numpy as np
from torch.utils.data import DataLoader, Dataset

from ..config import Config, ConfigError
from .batch import BatchSpec, assemble_batch, mask_sampler_for, text_spec
from .captions import CaptionCache, build_caption_cache
from .keys import HELDOUT_STREAMS, BatchKeys
from .sources import build_dataset


class PretrainStream(Dataset):
    """Map-style over steps: ``stream[s]`` is this rank's share of the batch of step ``s``."""

    def __init__(self, cfg: Config, spec: BatchSpec, rank: int = 0, world_size: int = 1):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} of world_size={world_size}: need world_size >= 1 and 0 <= rank < world_size")
        if cfg.train.batch_size % world_size:
            raise ValueError(
                f"train.batch_size={cfg.train.batch_size} is not divisible by {world_size} processes; "
                f"use a multiple of {world_size}"
            )
        self.cfg = cfg
        self.spec = spec
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
        # A source may order its epochs itself (shards: shard-local windows, resampling with weights).
        n = getattr(self.dataset, "epoch_length", len(self.dataset))
        order = getattr(self.dataset, "epoch_order", None)
        out = []
        start = step * self.cfg.train.batch_size + self.rank * self.local_batch
        for pos in range(start, start + self.local_batch):
            epoch, offset = divmod(pos, n)
            if self._perm is None or self._perm[0] != epoch:
                seed = self.cfg.seed
                perm = order(seed, epoch) if order else np.random.default_rng([seed, epoch, 7]).permutation(n)
                self._perm = (epoch, perm)
            out.append(int(self._perm[1][offset]))
        return out

    def __getitem__(self, step: int) -> dict:
        t0 = time.perf_counter()
        keys = BatchKeys(self.cfg.seed, step, self.rank * self.local_batch, self.cfg.train.batch_size)
        samples = [self.dataset[i] for i in self.indices(step)]
        cache = self.cache if self.spec.text != "none" else None
        batch = assemble_batch(samples, self.cfg, self.spec, self.masks, keys, cache)
        skipped = [s["skipped"] for s in samples if "skipped" in s]  # real-data sources (data.on_error=skip)
        if skipped:
            batch["stats"]["data_skipped"] = float(sum(skipped))
        for s in samples:
            for reason, count in s.get("skip_reasons", {}).items():
                key = f"data_{reason}_skipped"
                batch["stats"][key] = batch["stats"].get(key, 0.0) + count
        batch["step"] = step
        batch["stats"]["data_ms"] = 1000 * (time.perf_counter() - t0)
        return batch


def heldout_batch(cfg: Config, n: int, cache: CaptionCache | None, split: str = "val") -> dict:
    """A fixed batch from a held-out split (same masks and captions every call), for monitors.

    A real-data split may hold fewer than ``n`` images (1% of a small folder); the batch then has them all.
    """
    ds = build_dataset(cfg, split, size=max(n, 1))
    n = min(n, len(ds))
    if n < 2:  # the text-usage monitor pairs each image with another one's captions
        raise ConfigError(
            f"the {split} split of data.name={cfg.data.name} has {len(ds)} image(s); the training monitors need "
            "at least 2: pass train.monitor_every=0 to train without them, or give more images"
        )
    keys = BatchKeys(cfg.seed, 0, 0, n, HELDOUT_STREAMS)
    spec = text_spec(cfg) if cache is not None else BatchSpec()
    batch = assemble_batch([ds[i] for i in range(n)], cfg, spec, mask_sampler_for(cfg), keys, cache, crop=False)
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
