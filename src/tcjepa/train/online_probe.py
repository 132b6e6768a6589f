"""Online quality signals during pretraining: a cheap linear probe and the grounding pointing game.

The JEPA loss is not a quality signal (docs/findings.md §2), so every ``train.monitor_every`` steps the
EMA encoder is probed on a fixed set of held-out scenes (images rendered once at start), and for
TC-JEPA the pointing game is played on a few captioned scenes. Numbers go to metrics.jsonl as
``online/<task>`` and ``online/pointing``; they are comparable across runs because the scenes are
drawn with the evaluation seed, not the run's.
"""

from __future__ import annotations

import torch

from ..data.shapes import ShapesDataset
from ..eval.features import extract_features
from ..eval.grounding import evaluate_grounding
from ..eval.linear import linear_probe
from ..eval.scene import SCENE_TASKS
from ..eval.suite import EVAL_SEED

ONLINE_TASKS = ("colour", "shape", "count")


class _Frozen(torch.utils.data.Dataset):
    """Items rendered once, so probing costs only the encoder's forward passes."""

    def __init__(self, dataset: ShapesDataset):
        self.items = [dataset[i] for i in range(len(dataset))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


class OnlineProbe:
    def __init__(
        self,
        image_size: int,
        train: int = 512,
        val: int = 256,
        grounding: int = 32,
        cache=None,
        device: torch.device | str = "cpu",
    ):
        self.train = _Frozen(ShapesDataset("val", image_size=image_size, seed=EVAL_SEED, size=train))
        # A disjoint slice for validation: the test split never shares a scene with val.
        self.val = _Frozen(ShapesDataset("test", image_size=image_size, seed=EVAL_SEED, size=val))
        self.grounding = ShapesDataset("test", image_size=image_size, seed=EVAL_SEED, size=grounding)
        self.cache, self.device = cache, device

    @torch.no_grad()
    def __call__(self, method: torch.nn.Module) -> dict[str, float]:
        encoder = method.encoder
        train = extract_features(encoder, self.train, device=self.device)
        val = extract_features(encoder, self.val, device=self.device)
        out = {}
        for name in ONLINE_TASKS:
            task = SCENE_TASKS[name]
            with torch.enable_grad():
                res = linear_probe(
                    train.pooled,
                    task.label(train.labels),
                    val.pooled,
                    task.label(val.labels),
                    {},
                    task.num_classes,
                    lrs=(1e-2,),
                    wds=(1e-4,),
                    epochs=15,
                )
            out[f"online/{name}"] = res.val_acc
        if self.cache is not None and method.grounded:
            res = evaluate_grounding(method, self.grounding, self.cache, n=len(self.grounding), device=self.device)
            out["online/pointing"] = res.accuracy
            out["online/pointing_chance"] = res.chance
        return out
