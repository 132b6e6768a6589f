"""`fashion-scenes`: 1-4 real Fashion-MNIST items on a canvas, captioned with their classes, places and relations.

Why: `shapes` is synthetic and its captions mostly carry colour, which any encoder picks up from pixels
alone. Here the images are real product photos and the captions name the garment classes, the very
semantics the Fashion-MNIST probe scores, so the testbed asks the question TC-JEPA's claim is about: do
captions that name what is in the image help the encoder learn it? It is small enough to pretrain on CPU.

Items come from the same splits as the Fashion-MNIST probe (``fashion.FashionMNIST`` with its fixed seed 0):
train scenes use only the probe's training images, val scenes its val slice, test and heldout scenes the
official test set, so no probe validation or test image is ever seen in pretraining. Class pairs in
``HELD_OUT_PAIRS`` never share a train/val/test scene; every heldout scene holds one (co-occurrence never
seen in training). Each scene is a pure function of (seed, split, index); items keep at least
``MIN_VISIBLE`` of their pixels visible, and the per-pixel maps (instance slot, garment class) come from
the same alpha masks the painter used.

Items are ``{"image", "captions", "labels", "index"}`` like ``shapes``; labels: per slot (largest visible
first, padded to 4 with -1) ``class``, ``x_bin``, ``y_bin``; ``count`` (n - 1), ``relation`` (slot 0 to
slot 1, -1 alone), ``heldout``, ``heldout_slot``, ``seg_class`` (0 background, 1 + class) and ``instance``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from tcjepa.data.arguments import int_arg, item_index
from tcjepa.data.fashion import CLASS_NAMES, FashionMNIST
from tcjepa.data.fashion_scenes_captions import CAPTIONS_PER_SCENE, CLASS_WORDS, build_captions
from tcjepa.data.shapes_captions import Grounding, relation_index
from tcjepa.data.shapes_render import GridPosition, off_grid_coordinate, slot_order

__all__ = [
    "CAPTIONS_PER_SCENE",
    "CLASS_WORDS",
    "HELD_OUT_PAIRS",
    "MAX_ITEMS",
    "SPLITS",
    "FashionScene",
    "FashionScenes",
    "Item",
]

SPLITS: tuple[str, ...] = ("train", "val", "test", "heldout")
DEFAULT_SIZES: dict[str, int] = {"train": 100_000, "val": 2_000, "test": 5_000, "heldout": 5_000}
_ITEM_SPLIT = {"train": "train", "val": "val", "test": "test", "heldout": "test"}
ITEM_POOL_SEED = 0  # the probe's val slice; fixed so pretraining never sees it whatever the run's seed
MAX_ITEMS = 4
MIN_IMAGE_SIZE = 24
# Class pairs never in one train/val/test scene; disjoint, so every class keeps 8 of its 9 partners.
HELD_OUT_PAIRS: tuple[tuple[int, int], ...] = ((0, 5), (1, 8), (2, 7), (3, 9), (4, 6))
_HELD_OUT = {frozenset(p) for p in HELD_OUT_PAIRS}

MIN_VISIBLE = 0.6  # share of an item's pixels that later items may not cover
_ALPHA_GAIN = 4.0  # item opacity = clip(gain * grey): the garment is opaque, its black surround transparent
_MASK_ALPHA = 0.5  # a pixel belongs to an item (instance / class maps) where its opacity reaches this
_PLACE_TRIES = 40
_LAYOUT_RESTARTS = 100


@dataclass(frozen=True)
class Item(GridPosition):
    label: int  # Fashion-MNIST class
    source: int  # row in the item pool (FashionMNIST of the split's item split)
    cx: float  # centre in image units, y down
    cy: float
    side: int  # pixels
    brightness: float


@dataclass(frozen=True)
class FashionScene:
    split: str
    index: int
    image_size: int
    items: tuple[Item, ...]  # slot order: largest visible area first
    paint_order: tuple[int, ...]  # slots back to front
    visible_area: tuple[int, ...]
    background: tuple[float, float, float]
    noise_seed: int
    captions: tuple[str, ...]
    groundings: tuple[tuple[Grounding, ...], ...]
    caption_kinds: tuple[str, ...]

    @property
    def n_objects(self) -> int:
        return len(self.items)

    @property
    def heldout_slot(self) -> int:
        """Lowest slot of an item in a held-out class pair of this scene, -1 when the scene holds none."""
        labels = [it.label for it in self.items]
        for k, a in enumerate(labels):
            if any(frozenset((a, b)) in _HELD_OUT for b in labels if b != a):
                return k
        return -1

    @property
    def relation(self) -> int:
        return relation_index(self.items[0], self.items[1]) if len(self.items) > 1 else -1


class FashionScenes(Dataset):
    """Captioned canvases of Fashion-MNIST items, generated on demand from the local IDX files.

    ``root`` is where the Fashion-MNIST files are (default: Debian's ``dataset-fashion-mnist`` folder or
    ``$TCJEPA_FASHION_MNIST``); a missing folder raises FileNotFoundError with the install command.
    """

    def __init__(
        self,
        split: str = "train",
        image_size: int = 64,
        seed: int = 0,
        size: int | None = None,
        min_objects: int = 2,
        max_objects: int = MAX_ITEMS,
        root: str | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split={split!r} is not a fashion-scenes split; expected one of {SPLITS}.")
        self.split = split
        self.image_size = int_arg("image_size", image_size, MIN_IMAGE_SIZE, None, "Smaller canvases blur items away.")
        self.seed = int_arg("seed", seed, 0, None, "Seeds must be non-negative (they seed numpy's RNG).")
        hint = f"Scenes hold 1..{MAX_ITEMS} items; pass min_objects <= max_objects in that range."
        self.min_objects = int_arg("min_objects", min_objects, 1, MAX_ITEMS, hint)
        self.max_objects = int_arg("max_objects", max_objects, 1, MAX_ITEMS, hint)
        if self.min_objects > self.max_objects:
            raise ValueError(f"min_objects={min_objects} is larger than max_objects={max_objects}. {hint}")
        if split == "heldout" and self.max_objects < 2:
            raise ValueError("the heldout split needs max_objects >= 2: each of its scenes holds a held-out class pair")
        default = DEFAULT_SIZES[split]
        self.size = default if size is None else int_arg("size", size, 1, None, f"None means {default}.")
        self.root = root
        self._split_id = SPLITS.index(split)

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return (
            f"FashionScenes(split={self.split!r}, image_size={self.image_size}, seed={self.seed}, size={self.size}, "
            f"min_objects={self.min_objects}, max_objects={self.max_objects})"
        )

    @cached_property
    def pool(self) -> FashionMNIST:
        """The Fashion-MNIST images items are cut from (loaded on first use, once per process)."""
        return FashionMNIST(_ITEM_SPLIT[self.split], image_size=28, root=self.root, seed=ITEM_POOL_SEED)

    @cached_property
    def _by_class(self) -> list[np.ndarray]:
        return [np.flatnonzero(self.pool.targets == c) for c in range(len(CLASS_NAMES))]

    # ---- sampling ----------------------------------------------------------------------------------

    def _classes(self, rng: np.random.Generator, n: int) -> list[int]:
        """n distinct classes; a held-out pair only (and always) in the heldout split."""
        if self.split == "heldout":
            pair = HELD_OUT_PAIRS[int(rng.integers(len(HELD_OUT_PAIRS)))]
            rest = [c for c in range(len(CLASS_NAMES)) if c not in pair]
            out = [*pair, *(int(c) for c in rng.choice(rest, size=max(n, 2) - 2, replace=False))]
            return [out[i] for i in rng.permutation(len(out))]
        while True:  # about 1 in 3 four-item draws holds a held-out pair: resampling ends quickly
            out = [int(c) for c in rng.choice(len(CLASS_NAMES), size=n, replace=False)]
            if not any(frozenset((a, b)) in _HELD_OUT for a in out for b in out if a < b):
                return out

    def _alpha(self, source: int, side: int) -> tuple[np.ndarray, np.ndarray]:
        """(grey, alpha) of pool image ``source`` at ``side`` pixels, both (side, side) float32 in [0, 1]."""
        grey = torch.from_numpy(self.pool.images[source]).float().div_(255.0)[None, None]
        if side != grey.shape[-1]:
            grey = F.interpolate(grey, size=(side, side), mode="bilinear", antialias=True)
        grey = grey[0, 0].clamp_(0.0, 1.0).numpy()
        return grey, np.clip(_ALPHA_GAIN * grey, 0.0, 1.0)

    def _box(self, item: Item) -> tuple[int, int]:
        """Top-left pixel of an item's square (items lie wholly inside the canvas)."""
        s = self.image_size
        x0 = min(max(round(item.cx * s - item.side / 2), 0), s - item.side)
        y0 = min(max(round(item.cy * s - item.side / 2), 0), s - item.side)
        return x0, y0

    def _layout(self, rng: np.random.Generator) -> tuple[list[Item], list[int]] | None:
        """Items back to front and their visible pixels; None to resample. Painting the scene (``_paint``)
        redraws the instance map from the items."""
        s = self.image_size
        n = int(rng.integers(self.min_objects, self.max_objects + 1))
        if self.split == "heldout":
            n = max(n, 2)
        inst = np.zeros((s, s), dtype=np.int64)
        items: list[Item] = []
        full: list[int] = []
        visible: list[int] = []
        hi = 0.5 - 0.04 * (n - 1)  # fewer, larger items; four still fit with room to move
        for depth, label in enumerate(self._classes(rng, n)):
            pool = self._by_class[label]
            source = int(pool[int(rng.integers(len(pool)))])
            side = max(8, round(float(rng.uniform(hi - 0.14, hi)) * s))
            brightness = float(rng.uniform(0.75, 1.0))
            margin = side / (2 * s)
            mask = self._alpha(source, side)[1] >= _MASK_ALPHA  # the same wherever the item lands
            for _ in range(_PLACE_TRIES):
                item = Item(
                    label, source, off_grid_coordinate(rng, margin), off_grid_coordinate(rng, margin), side, brightness
                )
                x0, y0 = self._box(item)
                window = inst[y0 : y0 + side, x0 : x0 + side]
                covered = np.bincount(window[mask], minlength=depth + 1)[1:]
                if any(visible[j] - covered[j] < MIN_VISIBLE * full[j] for j in range(depth)):
                    continue
                visible = [int(v - c) for v, c in zip(visible, covered)] + [int(mask.sum())]
                full.append(int(mask.sum()))
                window[mask] = depth + 1
                items.append(item)
                break
            else:
                return None
        return items, visible

    def _generate(self, index: int) -> FashionScene:
        i = item_index(index, self.size, self)
        rng = np.random.default_rng([self.seed, self._split_id, i, 0xFA5])  # 0xFA5: not a shapes scene's stream
        background = tuple(float(v) for v in rng.uniform(0.0, 0.3, size=3))
        noise_seed = int(rng.integers(2**31))
        for _ in range(_LAYOUT_RESTARTS):
            placed = self._layout(rng)
            if placed is not None:
                break
        else:  # practically unreachable: four items cover well under the canvas
            raise RuntimeError(f"could not place items for index {i} of {self!r}")
        items, visible = placed
        order = slot_order(items, visible)
        slotted = tuple(items[k] for k in order)
        areas = tuple(visible[k] for k in order)
        captions = build_captions(slotted, areas, rng)
        scene = FashionScene(
            split=self.split,
            index=i,
            image_size=self.image_size,
            items=slotted,
            paint_order=tuple(order.index(k) for k in range(len(items))),
            visible_area=areas,
            background=background,  # type: ignore[arg-type]
            noise_seed=noise_seed,
            captions=tuple(c.text for c in captions),
            groundings=tuple(c.groundings for c in captions),
            caption_kinds=tuple(c.kind for c in captions),
        )
        return scene

    # ---- public API --------------------------------------------------------------------------------

    def scene(self, index: int) -> FashionScene:
        """Items, captions and groundings of sample ``index``, without pixels."""
        return self._generate(index)

    def render(self, scene: FashionScene) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 image and (H, W) int64 instance map (0 background, k + 1 = slot k)."""
        image, instance = self._paint(scene)
        return (image * 255).round().astype(np.uint8).transpose(1, 2, 0), instance

    def _paint(self, scene: FashionScene) -> tuple[np.ndarray, np.ndarray]:
        s = self.image_size
        noise = np.random.default_rng(scene.noise_seed).normal(0.0, 0.03, size=(1, s, s)).astype(np.float32)
        image = np.clip(np.asarray(scene.background, np.float32)[:, None, None] + noise, 0.0, 1.0)
        instance = np.zeros((s, s), dtype=np.int64)
        for slot in scene.paint_order:
            item = scene.items[slot]
            grey, alpha = self._alpha(item.source, item.side)
            x0, y0 = self._box(item)
            region = image[:, y0 : y0 + item.side, x0 : x0 + item.side]
            region *= 1.0 - alpha
            region += alpha * grey * item.brightness
            instance[y0 : y0 + item.side, x0 : x0 + item.side][alpha >= _MASK_ALPHA] = slot + 1
        return image, instance

    def labels(self, scene: FashionScene, instance: np.ndarray) -> dict[str, torch.Tensor]:
        """Probe targets with fixed shapes (per-slot vectors padded to MAX_ITEMS with -1)."""
        per_slot = {name: np.full(MAX_ITEMS, -1, dtype=np.int64) for name in ("class", "x_bin", "y_bin")}
        class_lut = np.zeros(scene.n_objects + 1, dtype=np.int64)
        for k, item in enumerate(scene.items):
            per_slot["class"][k], per_slot["x_bin"][k], per_slot["y_bin"][k] = item.label, item.x_bin, item.y_bin
            class_lut[k + 1] = 1 + item.label
        out = {name: torch.from_numpy(v) for name, v in per_slot.items()}
        out["count"] = torch.tensor(scene.n_objects - 1, dtype=torch.long)
        out["relation"] = torch.tensor(scene.relation, dtype=torch.long)
        out["heldout"] = torch.tensor(scene.heldout_slot >= 0, dtype=torch.bool)
        out["heldout_slot"] = torch.tensor(scene.heldout_slot, dtype=torch.long)
        out["seg_class"] = torch.from_numpy(class_lut[instance])
        out["instance"] = torch.from_numpy(instance)
        return out

    def __getitem__(self, index: int) -> dict:
        scene = self._generate(index)
        image, instance = self._paint(scene)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
            "captions": list(scene.captions),
            "labels": self.labels(scene, instance),
            "index": scene.index,
        }
