"""Scene probes on ``shapes``: what a frozen encoder knows about objects, counts and relations.

Each task reads one label from the exact scene annotations. Chance is the accuracy of always
answering the most frequent training class, printed beside every number. ``test`` holds attribute
combinations seen in training; ``heldout`` scenes each contain a combination never seen in training
(compositional generalisation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

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


SCENE_TASKS: dict[str, SceneTask] = {
    t.name: t
    for t in [
        SceneTask("colour", _slot("colour", 0), len(COLOURS), "colour of the largest object"),
        SceneTask("shape", _slot("shape", 0), len(SHAPES), "shape of the largest object"),
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


def majority_chance(train_y: torch.Tensor, test_y: torch.Tensor) -> float:
    train_y, test_y = train_y[train_y >= 0], test_y[test_y >= 0]
    if len(train_y) == 0 or len(test_y) == 0:
        return float("nan")
    majority = torch.bincount(train_y).argmax()
    return float((test_y == majority).float().mean())


def scene_probes(
    train: Features, val: Features, tests: dict[str, Features], tasks: tuple[str, ...], seed: int = 0
) -> dict[str, float]:
    """Flat ``{"probe/<task>/<test set>": acc, "chance/<task>/<test set>": acc, ...}``."""
    out: dict[str, float] = {}
    for name in tasks:
        task = SCENE_TASKS[name]
        y = {"train": task.label(train.labels), "val": task.label(val.labels)}
        test_sets = {k: (f.pooled, task.label(f.labels)) for k, f in tests.items()}
        res = linear_probe(train.pooled, y["train"], val.pooled, y["val"], test_sets, task.num_classes, seed=seed)
        out[f"probe/{name}/val"] = res.val_acc
        for split, acc in res.test_acc.items():
            out[f"probe/{name}/{split}"] = acc
            out[f"chance/{name}/{split}"] = majority_chance(y["train"], test_sets[split][1])
    return out
