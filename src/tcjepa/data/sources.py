"""Where training images come from: the datasets a config can name, as one registry.

The stream (``stream.py``) only needs a map-style dataset of ``{"image", "captions", ...}`` items; which
dataset backs it is chosen here, by ``data.name``, so a new source (Fashion-MNIST scenes, WebDataset shards)
is one builder added to ``DATASETS`` and nothing else: ``jsonl`` and ``coco`` (captioned photographs,
``captioned.py``) and ``webdataset`` (tar shards, ``shards.py``) came that way.
``DATASETS`` is the only list of dataset names (``tcjepa.config.PATH_SOURCES`` names those that need
``data.path``; tests/data/test_sources.py keeps it within this one): ``tcjepa.config`` sits below the data
layer and cannot know them, so the name is checked here (:func:`check_data_config`), at start, by the CLI and by
:func:`build_dataset`.
"""

from __future__ import annotations

from collections.abc import Callable

from torch.utils.data import Dataset

from ..config import Config, require_choice


def _scenes(cfg: Config, split: str, size: int | None, cls: type) -> Dataset:
    """A generated scene dataset (shapes, fashion-scenes): its train split is ``data.train_size`` scenes."""
    if split == "train" and size is None:
        size = cfg.data.train_size
    return cls(
        split=split,
        image_size=cfg.data.image_size,
        seed=cfg.seed,
        size=size,
        min_objects=cfg.data.min_objects,
        max_objects=cfg.data.max_objects,
    )


def _shapes(cfg: Config, split: str, size: int | None) -> Dataset:
    from .shapes import ShapesDataset

    return _scenes(cfg, split, size, ShapesDataset)


def _fashion_scenes(cfg: Config, split: str, size: int | None) -> Dataset:
    from .fashion_scenes import FashionScenes

    return _scenes(cfg, split, size, FashionScenes)


def _jsonl(cfg: Config, split: str, size: int | None) -> Dataset:
    from .captioned import captioned_dataset

    return captioned_dataset(cfg, "jsonl", split, size)


def _coco(cfg: Config, split: str, size: int | None) -> Dataset:
    from .captioned import captioned_dataset

    return captioned_dataset(cfg, "coco", split, size)


def _webdataset(cfg: Config, split: str, size: int | None) -> Dataset:
    from .shards import shard_dataset

    return shard_dataset(cfg, split, size)


# name -> builder(cfg, split, size): size None means the split's configured (or natural) size. The sources
# that read files (jsonl, coco, webdataset) are also listed in tcjepa.config.PATH_SOURCES, which makes
# data.path required.
DATASETS: dict[str, Callable[[Config, str, int | None], Dataset]] = {
    "shapes": _shapes,
    "fashion-scenes": _fashion_scenes,
    "jsonl": _jsonl,
    "coco": _coco,
    "webdataset": _webdataset,
}


def check_data_config(cfg: Config) -> None:
    """Raise a ConfigError naming ``data.name``, the registered names and the closest one."""
    require_choice(
        "data.name", cfg.data.name, DATASETS, "A new source is a builder registered in tcjepa.data.sources.DATASETS"
    )


def build_dataset(cfg: Config, split: str = "train", size: int | None = None) -> Dataset:
    """The ``split`` of the dataset ``data.name`` names (``size`` items where the source is generated)."""
    check_data_config(cfg)
    return DATASETS[cfg.data.name](cfg, split, size)


def scene_dataset(data_name: str, split: str, image_size: int, size: int, seed: int, min_objects: int = 2) -> Dataset:
    """Labelled scenes that speak the run's caption vocabulary, for word maps and the pointing game.

    Runs trained on `fashion-scenes` get fashion-scenes (``min_objects`` items or more); every other
    source gets `shapes`, the data the scene probes are defined on.
    """
    if data_name == "fashion-scenes":
        from .fashion_scenes import FashionScenes

        return FashionScenes(split, image_size=image_size, seed=seed, size=size, min_objects=min_objects)
    from .shapes import ShapesDataset

    return ShapesDataset(split, image_size=image_size, seed=seed, size=size)
