"""Dense probe: the mIoU arithmetic by hand, majority patch labels, and perfect versus useless features."""

from __future__ import annotations

import math

import pytest
import torch

from tcjepa.eval.dense import confusion_matrix, dense_probe, miou_from_confusion, patch_labels

pytestmark = pytest.mark.usefixtures("single_thread")

GRID, PIX, CLASSES, DIM = 4, 4, 3, 8  # 4x4 patches of 4x4 pixels: 16x16 maps


def test_miou_from_confusion_by_hand() -> None:
    conf = torch.tensor([[3, 1, 0], [0, 2, 0], [0, 0, 0]])  # rows: truth, columns: prediction
    miou, per_class, acc = miou_from_confusion(conf)
    # Class 0: 3 / (4 + 3 - 3) = 0.75; class 1: 2 / (2 + 3 - 2) = 2/3; class 2 never occurs: left out.
    assert per_class[:2] == pytest.approx([0.75, 2 / 3]) and math.isnan(per_class[2])
    assert miou == pytest.approx((0.75 + 2 / 3) / 2)
    assert acc == pytest.approx(5 / 6)
    # A class that is only predicted (never true) has IoU 0 and does count.
    miou, per_class, _ = miou_from_confusion(torch.tensor([[1, 1], [0, 0]]))
    assert per_class == [0.5, 0.0] and miou == 0.25


def test_confusion_matrix_skips_ignored_pixels() -> None:
    gt = torch.tensor([[0, 1, 255], [1, 1, 0]], dtype=torch.uint8)
    pred = torch.tensor([[0, 0, 1], [1, 1, 1]])
    assert confusion_matrix(gt, pred, 2).tolist() == [[1, 1], [1, 2]]


def test_patch_labels_take_the_majority_of_valid_pixels() -> None:
    maps = torch.tensor(
        [
            [0, 1, 2, 2],
            [1, 1, 2, 255],
            [255, 255, 0, 1],
            [255, 255, 1, 0],
        ]
    )[None]
    # Patches (2x2): top-left three 1s, top-right 2s beat an ignored pixel, bottom-left all ignored,
    # bottom-right a 2-2 tie between 0 and 1 that goes to the lower class.
    assert patch_labels(maps, 2, 3).tolist() == [[1, 2, -1, 0]]


def _striped_set(n: int, seed: int, informative: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Maps of vertical stripes one patch wide, so every patch is one class and its column neighbours
    share it: bilinear upsampling then gives each pixel >= 5/8 of its own patch's logits, and as all patches
    of a class get the same logits, a trained head keeps every pixel right. Informative features are one
    fixed code per class; uninformative ones are noise."""
    g = torch.Generator().manual_seed(seed)
    columns = torch.randint(0, CLASSES, (n, GRID), generator=g)
    patch_y = columns[:, None, :].expand(n, GRID, GRID)  # (n, row, column)
    maps = patch_y.repeat_interleave(PIX, 1).repeat_interleave(PIX, 2).to(torch.uint8)
    if informative:
        codes = torch.randn(CLASSES, DIM, generator=torch.Generator().manual_seed(99))
        patches = codes[patch_y.reshape(n, -1)]
    else:
        patches = torch.randn(n, GRID * GRID, DIM, generator=g)
    return patches.half(), maps


def test_features_that_encode_each_patch_label_give_perfect_segmentation() -> None:
    train = _striped_set(64, 0, True)
    val = _striped_set(16, 1, True)
    test_x, test_maps = _striped_set(16, 2, True)
    test_maps[:, 0, 0] = 255  # an ignored pixel is not scored
    res = dense_probe(*train, *val, {"test": (test_x, test_maps)}, CLASSES, GRID, epochs=5)
    assert res.miou["test"] == 1.0 and res.pixel_acc["test"] == 1.0
    assert res.per_class_iou["test"] == [1.0, 1.0, 1.0]
    assert res.val_miou == 1.0 and len(res.grid_val_miou) == 2 and res.lr in (1e-3, 1e-2)


def test_random_features_give_low_miou() -> None:
    res = dense_probe(
        *_striped_set(64, 0, False), *_striped_set(16, 1, False), {"t": _striped_set(32, 2, False)}, CLASSES, GRID
    )
    # Guessing among three balanced classes: IoU 1/9 / (1/3 + 1/3 - 1/9) = 0.2 per class, pixel accuracy 1/3.
    assert res.miou["t"] < 0.3 and res.pixel_acc["t"] < 0.45


def test_dense_probe_is_deterministic_and_checks_the_grid() -> None:
    train, val = _striped_set(16, 0, True), _striped_set(8, 1, True)
    a = dense_probe(*train, *val, {"v": val}, CLASSES, GRID, epochs=1, batch_size=4, seed=3)
    assert dense_probe(*train, *val, {"v": val}, CLASSES, GRID, epochs=1, batch_size=4, seed=3) == a
    with pytest.raises(ValueError, match="grid"):
        dense_probe(*train, *val, {}, CLASSES, grid=3)
