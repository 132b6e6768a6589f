"""Where training images come from: the datasets a config can name, as one registry.

The stream (``stream.py``) only needs a map-style dataset of ``{"image", "captions", ...}`` items; which
dataset backs it is chosen here, by ``data.name``, so a new source (Fashion-MNIST scenes, a folder or JSONL
of captioned images, COCO, WebDataset shards) is one builder added to ``DATASETS`` and nothing else.
"""

from __future__ import annotations

from torch.utils.data import Dataset

from ..config import Config


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
