"""`shapes`: a procedurally generated, captioned scene dataset rendered on the fly.

It is the default pretraining data (no download, any resolution) and also the evaluation data: its
labels (colour, shape, size, count, position, relation, per-pixel maps) feed the probes, and its word
groundings feed the pointing game. Every scene is a pure function of (seed, split, index), so runs are
reproducible and splits never share a scene.

Drawing lives in `shapes_render`, sentences in `shapes_captions`; this module samples layouts and
turns them into training samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from tcjepa.data.arguments import int_arg, item_index
from tcjepa.data.shapes_captions import (
    CAPTIONS_PER_SCENE,
    RELATIONS,
    Grounding,
    build_captions,
    relation_index,
)
from tcjepa.data.shapes_render import (
    BACKGROUNDS,
    COLOUR_JITTER,
    COLOUR_RGB,
    COLOURS,
    SHAPES,
    SIZE_AREA,
    SIZES,
    UNIT_RADIUS,
    Background,
    ShapeObject,
    clip_to_frame,
    instance_map,
    off_grid_coordinate,
    paint,
    rasterise,
    sample_background,
    slot_order,
)

__all__ = [
    "BACKGROUNDS",
    "CAPTIONS_PER_SCENE",
    "COLOURS",
    "HELD_OUT_COMBOS",
    "MAX_OBJECTS",
    "MIN_VISIBLE",
    "RELATIONS",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "Background",
    "Grounding",
    "Scene",
    "ShapeObject",
    "ShapesDataset",
    "save_preview",
]

SPLITS: tuple[str, ...] = ("train", "val", "test", "heldout")
DEFAULT_SIZES: dict[str, int] = {"train": 100_000, "val": 2_000, "test": 5_000, "heldout": 5_000}
MAX_OBJECTS = 4
MIN_IMAGE_SIZE = 16

# (colour, shape) pairs never seen in train/val/test. One per shape and one per colour, so every
# colour and every shape still occurs in training with the other 7 colours / 4 shapes.
HELD_OUT_COMBOS: tuple[tuple[str, str], ...] = (
    ("red", "star"),
    ("green", "cross"),
    ("blue", "triangle"),
    ("yellow", "circle"),
    ("purple", "square"),
)
_ALL_COMBOS = tuple((c, s) for c in COLOURS for s in SHAPES)
_TRAIN_COMBOS = tuple(cs for cs in _ALL_COMBOS if cs not in HELD_OUT_COMBOS)

MIN_VISIBLE = 0.6  # every object keeps at least this fraction of its area visible
_MIN_ON_FRAME = 0.85  # objects may poke out of the image a little, not more
_PLACE_TRIES = 40
_LAYOUT_RESTARTS = 100


@dataclass(frozen=True)
class Scene:
    """Everything about one sample except its pixels (those come from `ShapesDataset.render`)."""

    split: str
    index: int
    image_size: int
    objects: tuple[ShapeObject, ...]  # slot order: largest visible area first, ties by position
    full_area: tuple[int, ...]  # unoccluded pixels per slot (including any part outside the frame)
    visible_area: tuple[int, ...]  # pixels per slot in the instance map
    background: Background
    captions: tuple[str, ...]
    groundings: tuple[tuple[Grounding, ...], ...]  # per caption: (word_index, word, slots)
    caption_kinds: tuple[str, ...]  # per caption: "count", "object", "relation", ...

    @property
    def n_objects(self) -> int:
        return len(self.objects)

    @property
    def heldout(self) -> bool:
        """True when the scene contains a held-out (colour, shape) pair."""
        return any((o.colour, o.shape) in HELD_OUT_COMBOS for o in self.objects)

    @property
    def heldout_slot(self) -> int:
        """Slot of the object carrying a held-out (colour, shape) pair, -1 when none does.

        Heldout scenes always hold one such object and may, by chance, hold more (the other objects are
        drawn from all pairs); then this is the lowest slot, i.e. the largest of them. It is slot 0 (the
        object the "largest object" probes ask about) in only ~56% of heldout scenes.
        """
        return next((k for k, o in enumerate(self.objects) if (o.colour, o.shape) in HELD_OUT_COMBOS), -1)

    @property
    def relation(self) -> int:
        """Index into RELATIONS of slot 0 relative to slot 1, or -1 with a single object."""
        return relation_index(self.objects[0], self.objects[1]) if len(self.objects) > 1 else -1

    @property
    def visible_fraction(self) -> tuple[float, ...]:
        return tuple(v / f for v, f in zip(self.visible_area, self.full_area))


class ShapesDataset(Dataset):
    """Captioned scenes of 1-4 coloured shapes on textured backgrounds, rendered on demand.

    `__getitem__` returns {"image": (3, H, W) float in [0, 1], "captions": list of CAPTIONS_PER_SCENE
    sentences, "labels": dict of fixed-shape tensors (-1 = absent), "index": int}. `scene(i)` gives the
    geometry, captions and groundings without pixels; `render(scene)` draws them.
    """

    def __init__(
        self,
        split: str = "train",
        image_size: int = 64,
        seed: int = 0,
        size: int | None = None,
        min_objects: int = 1,
        max_objects: int = MAX_OBJECTS,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split={split!r} is not a shapes split; expected one of {SPLITS}.")
        self.split = split
        self.image_size = int_arg(
            "image_size", image_size, MIN_IMAGE_SIZE, None, "Smaller images leave small shapes a few pixels."
        )
        self.seed = int_arg("seed", seed, 0, None, "Seeds must be non-negative (they seed numpy's RNG).")
        hint = f"Scenes hold 1..{MAX_OBJECTS} objects; pass min_objects <= max_objects in that range."
        self.min_objects = int_arg("min_objects", min_objects, 1, MAX_OBJECTS, hint)
        self.max_objects = int_arg("max_objects", max_objects, 1, MAX_OBJECTS, hint)
        if self.min_objects > self.max_objects:
            raise ValueError(f"min_objects={min_objects} is larger than max_objects={max_objects}. {hint}")
        self.size = (
            DEFAULT_SIZES[split]
            if size is None
            else int_arg("size", size, 1, None, f"Pass None for the default ({DEFAULT_SIZES[split]}).")
        )
        self._split_id = SPLITS.index(split)

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return (
            f"ShapesDataset(split={self.split!r}, image_size={self.image_size}, seed={self.seed}, "
            f"size={self.size}, min_objects={self.min_objects}, max_objects={self.max_objects})"
        )

    # ---- sampling ----------------------------------------------------------------------------------

    def _check_index(self, index: int) -> int:
        return item_index(index, self.size, self)

    def _sample_combos(self, rng: np.random.Generator, n: int) -> list[tuple[str, str]]:
        """n distinct (colour, shape) pairs; held-out pairs only (and always) in the heldout split."""
        combos: list[tuple[str, str]] = []
        pool = _TRAIN_COMBOS
        if self.split == "heldout":
            combos.append(HELD_OUT_COMBOS[int(rng.integers(len(HELD_OUT_COMBOS)))])
            pool = _ALL_COMBOS
        while len(combos) < n:
            combo = pool[int(rng.integers(len(pool)))]
            if combo not in combos:
                combos.append(combo)
        return [combos[i] for i in rng.permutation(n)]  # the held-out one is not always at the back

    def _layout(self, rng: np.random.Generator) -> tuple[list[ShapeObject], np.ndarray, list[int], list[int]] | None:
        """Place objects back to front; no placement may leave an earlier object < MIN_VISIBLE visible.

        Returns objects in painting order, the instance map (id = painting order + 1), full and visible
        pixel areas; or None when an object found no valid place (the caller resamples the scene).
        """
        s = self.image_size
        n = int(rng.integers(self.min_objects, self.max_objects + 1))
        inst = np.zeros((s, s), dtype=np.int64)
        objects: list[ShapeObject] = []
        full: list[int] = []
        visible: list[int] = []
        for depth, (colour, shape) in enumerate(self._sample_combos(rng, n)):
            size = SIZES[int(rng.integers(len(SIZES)))]
            area = float(rng.uniform(*SIZE_AREA[size]))
            rotation = 0.0 if shape == "circle" else float(rng.uniform(0.0, 2 * math.pi))
            jitter = rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=3)
            r, g, b = (int(v) for v in np.clip(np.add(COLOUR_RGB[colour], jitter), 0, 255))
            margin = min(0.55 * UNIT_RADIUS[shape] * math.sqrt(area), 0.3)  # may poke out a little, no more
            for _ in range(_PLACE_TRIES):
                obj = ShapeObject(
                    shape,
                    colour,
                    size,
                    area,
                    off_grid_coordinate(rng, margin),
                    off_grid_coordinate(rng, margin),
                    rotation,
                    (r, g, b),
                    depth,
                )
                mask, x0, y0 = rasterise(obj, s)
                clipped, where = clip_to_frame(mask, x0, y0, s)
                total, on_frame = int(mask.sum()), int(clipped.sum())
                if total == 0 or on_frame < _MIN_ON_FRAME * total:
                    continue
                covered = np.bincount(inst[where][clipped], minlength=depth + 1)[1:]
                if any(visible[j] - covered[j] < MIN_VISIBLE * full[j] for j in range(depth)):
                    continue
                visible = [int(v - c) for v, c in zip(visible, covered)] + [on_frame]
                full.append(total)
                inst[where][clipped] = depth + 1
                objects.append(obj)
                break
            else:
                return None
        return objects, inst, full, visible

    def _generate(self, index: int) -> tuple[Scene, np.ndarray]:
        """Scene `index` and its instance map (slot ids); its RNG is private to (seed, split, index)."""
        index = self._check_index(index)
        rng = np.random.default_rng([self.seed, self._split_id, index])
        background = sample_background(rng)
        for _ in range(_LAYOUT_RESTARTS):
            placed = self._layout(rng)
            if placed is not None:
                break
        else:  # practically unreachable: 4 large objects cover at most 40% of the image
            raise RuntimeError(f"could not place objects for index {index} of {self!r}")
        objects, inst, full, visible = placed
        order = slot_order(objects, visible)
        to_slot = np.zeros(len(objects) + 1, dtype=np.int64)
        to_slot[[i + 1 for i in order]] = np.arange(1, len(objects) + 1)
        slotted = tuple(objects[i] for i in order)
        captions = build_captions(slotted, background.kind, rng)
        scene = Scene(
            split=self.split,
            index=index,
            image_size=self.image_size,
            objects=slotted,
            full_area=tuple(full[i] for i in order),
            visible_area=tuple(visible[i] for i in order),
            background=background,
            captions=tuple(c.text for c in captions),
            groundings=tuple(c.groundings for c in captions),
            caption_kinds=tuple(c.kind for c in captions),
        )
        return scene, to_slot[inst]

    # ---- public API --------------------------------------------------------------------------------

    def scene(self, index: int) -> Scene:
        """Geometry, attributes, captions and groundings of sample `index`, without drawing pixels."""
        return self._generate(index)[0]

    def render(self, scene: Scene) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 image and (H, W) int64 instance map (0 background, k+1 = slot k).

        Drawn at `scene.image_size` with the same rasteriser the layout used, so the map matches the
        image pixel for pixel.
        """
        instance = instance_map(scene.objects, scene.image_size)
        return paint(scene.background, scene.objects, instance), instance

    def labels(self, scene: Scene, instance: np.ndarray) -> dict[str, torch.Tensor]:
        """Probe targets with fixed shapes (per-slot vectors padded to max_objects with -1)."""
        m, n = self.max_objects, scene.n_objects
        names = ("colour", "shape", "size", "x_bin", "y_bin")
        per_slot = {name: np.full(m, -1, dtype=np.int64) for name in names}
        colour_lut = np.zeros(n + 1, dtype=np.int64)
        shape_lut = np.zeros(n + 1, dtype=np.int64)
        for k, o in enumerate(scene.objects):
            per_slot["colour"][k] = COLOURS.index(o.colour)
            per_slot["shape"][k] = SHAPES.index(o.shape)
            per_slot["size"][k] = SIZES.index(o.size)
            per_slot["x_bin"][k] = o.x_bin
            per_slot["y_bin"][k] = o.y_bin
            colour_lut[k + 1] = 1 + per_slot["colour"][k]
            shape_lut[k + 1] = 1 + per_slot["shape"][k]
        instance = np.asarray(instance, dtype=np.int64)
        out = {name: torch.from_numpy(v) for name, v in per_slot.items()}
        out["count"] = torch.tensor(n - 1, dtype=torch.long)
        out["relation"] = torch.tensor(scene.relation, dtype=torch.long)
        out["background"] = torch.tensor(BACKGROUNDS.index(scene.background.kind), dtype=torch.long)
        out["heldout"] = torch.tensor(scene.heldout, dtype=torch.bool)
        out["heldout_slot"] = torch.tensor(scene.heldout_slot, dtype=torch.long)
        out["seg_colour"] = torch.from_numpy(colour_lut[instance])
        out["seg_shape"] = torch.from_numpy(shape_lut[instance])
        out["instance"] = torch.from_numpy(instance)
        return out

    def __getitem__(self, index: int) -> dict:
        scene, instance = self._generate(index)
        image = paint(scene.background, scene.objects, instance)
        chw = np.ascontiguousarray(image.transpose(2, 0, 1))
        tensor = torch.from_numpy(np.divide(chw, np.float32(255), dtype=np.float32))  # numpy: no thread pool
        return {
            "image": tensor,
            "captions": list(scene.captions),
            "labels": self.labels(scene, instance),
            "index": scene.index,
        }


def save_preview(path: str | Path, dataset: ShapesDataset, n: int = 16, captions_per_image: int | None = None) -> Path:
    """Write a PNG grid of the first `n` images with their captions, for a human to eyeball the data.

    Uses matplotlib's object API (no pyplot), so it never touches global plotting state.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = int_arg("n", n, 1, len(dataset), f"The preview shows dataset items 0..n-1 of {len(dataset)}.")
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(3.4 * cols, 5.2 * rows))
    FigureCanvasAgg(fig)
    for i in range(n):
        scene = dataset.scene(i)
        image, _ = dataset.render(scene)
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(image, interpolation="nearest")
        ax.set_title(f"{dataset.split} #{i}", fontsize=8)
        ax.axis("off")
        text = "\n".join(scene.captions[:captions_per_image])
        ax.text(0.0, -0.03, text, transform=ax.transAxes, va="top", ha="left", fontsize=6, family="monospace")
    fig.subplots_adjust(left=0.02, right=0.98, top=0.98, bottom=0.02, hspace=0.9, wspace=0.1)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out
