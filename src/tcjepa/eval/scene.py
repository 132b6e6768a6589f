"""Scene probes on ``shapes``: what a frozen encoder knows about objects, counts and relations.

Each task reads one label from the exact scene annotations. Chance is the accuracy of always
answering the most frequent training class, printed beside every number. ``test`` holds attribute
combinations seen in training; ``heldout`` scenes each contain a combination never seen in training
(compositional generalisation).

The tasks that ask about "the largest object" (slot 0) do not ask about the held-out object in every
heldout scene: it is the largest in only ~56% of them (1000 quick-suite heldout scenes, seed 0), so
``<task>/heldout`` mixes scenes whose asked-about object is a seen pair. ``shape_heldout`` is the clean
compositional number: the very same probe question (shape of the largest object; on train/val/test its
labels equal ``shape``'s), scored on heldout only where the largest object carries the held-out pair.
Asking instead for "the held-out object's shape" wherever it sits would change the question between
training and testing (a probe trained on the largest object would be graded on another one), so a low
score could not be told apart from the probe answering what it was trained to answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..data.fashion import CLASS_NAMES
from ..data.shapes import COLOURS, RELATIONS, SHAPES, SIZES
from .features import Features
from .linear import linear_probe


@dataclass(frozen=True)
class SceneTask:
    name: str
    label: Callable[[dict[str, torch.Tensor]], torch.Tensor]
    num_classes: int
    description: str


def _slot(key: str, k: int) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    return lambda labels: labels[key][:, k]


def _largest_if_heldout(key: str) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    """Slot 0's ``key``; in scenes holding a held-out pair, -1 (not scored) unless slot 0 carries it."""

    def label(labels: dict[str, torch.Tensor]) -> torch.Tensor:
        if "heldout_slot" not in labels:
            raise KeyError(
                "scene task on the held-out object needs the 'heldout_slot' label, which these features lack; "
                "they were extracted from an older shapes dataset: extract them again (ShapesDataset.labels adds it)"
            )
        slot = labels["heldout_slot"]
        return torch.where((slot >= 0) & (slot != 0), -1, labels[key][:, 0])

    return label


SCENE_TASKS: dict[str, SceneTask] = {
    t.name: t
    for t in [
        SceneTask("colour", _slot("colour", 0), len(COLOURS), "colour of the largest object"),
        SceneTask("shape", _slot("shape", 0), len(SHAPES), "shape of the largest object"),
        SceneTask(
            "shape_heldout",
            _largest_if_heldout("shape"),
            len(SHAPES),
            "shape of the largest object; heldout counts only scenes where it is the held-out (colour, shape) pair",
        ),
        SceneTask("size", _slot("size", 0), len(SIZES), "size class of the largest object"),
        SceneTask("count", lambda labels: labels["count"], 4, "number of objects (1-4)"),
        SceneTask("colour_2nd", _slot("colour", 1), len(COLOURS), "colour of the second-largest object"),
        SceneTask("shape_2nd", _slot("shape", 1), len(SHAPES), "shape of the second-largest object"),
        SceneTask(
            "relation",
            lambda labels: labels["relation"],
            len(RELATIONS),
            "where the largest object is relative to the second (left/right/above/below)",
        ),
    ]
}
DEMO_TASKS = ("colour", "shape", "count")

# The same questions on `fashion-scenes` (metrics ``fscene/<task>/<set>``): its garment classes are what the
# captions name. ``heldout`` scenes each hold a class pair never seen together in training.
FSCENE_TASKS: dict[str, SceneTask] = {
    t.name: t
    for t in [
        SceneTask("class", _slot("class", 0), len(CLASS_NAMES), "garment class of the largest item"),
        SceneTask("class_2nd", _slot("class", 1), len(CLASS_NAMES), "garment class of the second-largest item"),
        SceneTask("count", lambda labels: labels["count"], 4, "number of items (2-4)"),
        SceneTask(
            "relation",
            lambda labels: labels["relation"],
            len(RELATIONS),
            "where the largest item is relative to the second (left/right/above/below)",
        ),
    ]
}


def majority_chance(train_y: torch.Tensor, test_y: torch.Tensor) -> float:
    train_y, test_y = train_y[train_y >= 0], test_y[test_y >= 0]
    if len(train_y) == 0 or len(test_y) == 0:
        return float("nan")
    majority = torch.bincount(train_y).argmax()
    return float((test_y == majority).float().mean())


def scene_probes(
    train: Features,
    val: Features,
    tests: dict[str, Features],
    tasks: tuple[str, ...],
    seed: int = 0,
    table: dict[str, SceneTask] = SCENE_TASKS,
) -> dict[str, float]:
    """Flat ``{"probe/<task>/<set>": acc, "chance/<task>/<set>": acc, ...}`` for ``val`` and every test set.

    ``val`` is the accuracy of the head chosen on val (the best of the lr x wd grid, so slightly optimistic):
    the number to tune on; the test sets are only ever read with that head.
    """
    if "val" in tests:
        raise ValueError("scene_probes: a test set may not be called 'val' (that name is the validation split)")
    out: dict[str, float] = {}
    for name in tasks:
        task = table[name]
        y = {"train": task.label(train.labels), "val": task.label(val.labels)}
        test_sets = {k: (f.pooled, task.label(f.labels)) for k, f in tests.items()}
        res = linear_probe(train.pooled, y["train"], val.pooled, y["val"], test_sets, task.num_classes, seed=seed)
        out[f"probe/{name}/val"] = res.val_acc
        out[f"chance/{name}/val"] = majority_chance(y["train"], y["val"])
        for split, acc in res.test_acc.items():
            out[f"probe/{name}/{split}"] = acc
            out[f"chance/{name}/{split}"] = majority_chance(y["train"], test_sets[split][1])
    return out
