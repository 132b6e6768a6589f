"""Scene-probe labels: the held-out task asks about the held-out object, and val is reported beside test."""

from __future__ import annotations

import pytest
import torch

from tcjepa.data.shapes import HELD_OUT_COMBOS, SHAPES, ShapesDataset
from tcjepa.eval.features import Features
from tcjepa.eval.scene import SCENE_TASKS, scene_probes


def _labels(shape_slot0: list[int], heldout_slot: list[int]) -> dict[str, torch.Tensor]:
    shape = torch.full((len(shape_slot0), 4), -1)
    shape[:, 0] = torch.tensor(shape_slot0)
    shape[:, 1] = (shape[:, 0] + 1) % len(SHAPES)  # another shape in slot 1, to catch reading the wrong slot
    return {"shape": shape, "heldout_slot": torch.tensor(heldout_slot)}


def test_shape_heldout_scores_only_scenes_whose_largest_object_is_heldout() -> None:
    task = SCENE_TASKS["shape_heldout"]
    y = task.label(_labels([1, 2, 3, 4], [-1, 0, 1, 3]))
    assert y.tolist() == [1, 2, -1, -1]
    # On splits without held-out pairs (train/val/test) it is exactly the ordinary shape task.
    plain = _labels([0, 3, 2, 1], [-1, -1, -1, -1])
    assert torch.equal(task.label(plain), SCENE_TASKS["shape"].label(plain))


def test_shape_heldout_on_real_heldout_scenes() -> None:
    ds = ShapesDataset("heldout", image_size=32, size=40)
    items = [ds[i] for i in range(len(ds))]
    labels = {k: torch.stack([it["labels"][k] for it in items]) for k in ("shape", "heldout_slot")}
    y = SCENE_TASKS["shape_heldout"].label(labels)
    for i, label in enumerate(y.tolist()):
        largest = ds.scene(i).objects[0]
        if label >= 0:  # every scored scene asks about an object carrying a held-out pair
            assert (largest.colour, largest.shape) in HELD_OUT_COMBOS and label == SHAPES.index(largest.shape)
        else:
            assert (largest.colour, largest.shape) not in HELD_OUT_COMBOS
    assert 0 < int((y >= 0).sum()) < len(ds)


def test_shape_heldout_explains_missing_label() -> None:
    with pytest.raises(KeyError, match="heldout_slot.*extract them again"):
        SCENE_TASKS["shape_heldout"].label({"shape": torch.zeros(2, 4, dtype=torch.long)})


def _separable(classes: torch.Tensor, labels: torch.Tensor, seed: int) -> Features:
    """Features that are a noisy one-hot of ``classes``; labels given separately (they may disagree)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.one_hot(classes, 8).float() * 3 + 0.05 * torch.randn(len(classes), 8, generator=g)
    return Features(pooled=x, labels={"count": labels})


def test_scene_probes_report_val_from_the_val_split() -> None:
    classes = torch.arange(4).repeat(30)
    train = _separable(classes, classes, 0)
    val_classes = torch.tensor([0] * 30 + [1, 2, 3] * 10)
    val = _separable(val_classes, val_classes, 1)  # the probe gets val right
    test_classes = torch.arange(4).repeat(15)
    test = _separable(test_classes, (test_classes + 1) % 4, 2)  # and every test row wrong
    out = scene_probes(train, val, {"test": test}, ("count",))
    assert out["probe/count/val"] == pytest.approx(1.0) and out["probe/count/test"] == pytest.approx(0.0)
    assert out["chance/count/val"] == pytest.approx(0.5)  # majority training class 0: half of val
    assert out["chance/count/test"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="may not be called 'val'"):
        scene_probes(train, val, {"val": test}, ("count",))
