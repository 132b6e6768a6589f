"""Linear dense probe: per-patch semantic segmentation from frozen patch features, scored by mIoU.

Image-level probes only see pooled features; segmentation asks whether every patch knows what it
shows. The probe is one linear map D -> classes applied to each patch (standardised with training
statistics). It trains on one label per patch, the majority pixel label inside it, which is cheap
and needs no upsampling; it is scored at full resolution: patch logits are upsampled bilinearly to
the label map and arg-maxed, and intersection / union are summed over the whole set before averaging
over the classes present (in ground truth or prediction). Patches are in row-major order (index =
row * grid + column), as a ViT flattens them. Pixel labels outside [0, num_classes) (255, -1) are ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data.fashion import CLASS_NAMES
from ..data.shapes import COLOURS, SHAPES

# The per-pixel targets of the dense probe: label map key and classes (background included).
DENSE_TARGETS = {"colour": ("seg_colour", len(COLOURS) + 1), "shape": ("seg_shape", len(SHAPES) + 1)}
# On `fashion-scenes`: the garment class of every pixel (metric ``dense/garment/miou``).
FSCENE_DENSE_TARGETS = {"garment": ("seg_class", len(CLASS_NAMES) + 1)}

DEFAULT_LRS = (1e-3, 1e-2)
_CHUNK = 64  # images per step when a whole set would not fit comfortably in memory


@dataclass
class DenseResult:
    miou: dict[str, float]  # per test set
    pixel_acc: dict[str, float]
    per_class_iou: dict[str, list[float]]  # nan for a class absent from both ground truth and prediction
    lr: float
    val_miou: float
    grid_val_miou: list[float]  # one per lr


def confusion_matrix(gt: torch.Tensor, pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C) counts, rows = ground truth, columns = prediction; ground-truth labels outside [0, C) are skipped."""
    gt, pred = gt.reshape(-1).long(), pred.reshape(-1).long()
    keep = (gt >= 0) & (gt < num_classes)
    flat = gt[keep] * num_classes + pred[keep]
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def miou_from_confusion(conf: torch.Tensor) -> tuple[float, list[float], float]:
    """(mIoU, per-class IoU, pixel accuracy) of a confusion matrix summed over a whole set.

    A class with union 0 (neither in ground truth nor predicted) has IoU nan and is left out of the mean.
    """
    conf = conf.double()
    inter = conf.diag()
    union = conf.sum(0) + conf.sum(1) - inter
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.full_like(inter, float("nan")))
    present = union > 0
    miou = float(iou[present].mean()) if present.any() else float("nan")
    total = conf.sum()
    pixel_acc = float(inter.sum() / total) if total > 0 else float("nan")
    return miou, iou.tolist(), pixel_acc


def patch_labels(maps: torch.Tensor, grid: int, num_classes: int) -> torch.Tensor:
    """(n, grid * grid) majority label of the valid pixels in each patch; -1 where a patch has none.

    Ties go to the lower class index. Maps whose size is not a multiple of ``grid`` use adaptive pooling
    windows (a pixel on a window edge may count for two patches).
    """
    out = []
    for part in maps.split(_CHUNK):
        part = part.long()[:, None]
        # One class at a time: a full one-hot of 64 maps x 150 classes x 512^2 pixels would not fit.
        counts = torch.cat([F.adaptive_avg_pool2d((part == c).float(), grid) for c in range(num_classes)], 1)
        label = counts.argmax(1)
        label[counts.sum(1) == 0] = -1
        out.append(label.flatten(1))
    return torch.cat(out)


def _stats(patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std over every training patch, accumulated in float64 chunk by chunk."""
    d = patches.shape[-1]
    total, sq, count = torch.zeros(d, dtype=torch.float64), torch.zeros(d, dtype=torch.float64), 0
    for part in patches.split(_CHUNK):
        rows = part.reshape(-1, d).double()
        total += rows.sum(0)
        sq += (rows * rows).sum(0)
        count += rows.shape[0]
    mean = total / count
    var = (sq - count * mean * mean).clamp_min(0) / max(count - 1, 1)
    return mean.float(), var.sqrt().float().clamp_min(1e-6)


def _confusions(
    patches: torch.Tensor, maps: torch.Tensor, heads: list[tuple[torch.Tensor, torch.Tensor]], norm, grid: int, c: int
) -> list[torch.Tensor]:
    """One full-resolution confusion matrix per (weight, bias) head."""
    mean, std = norm
    size = tuple(maps.shape[-2:])
    # Upsampled logits are (images, C, H, W) floats: keep them near 2^25 elements (128 MB) per step.
    step = max(1, min(_CHUNK, 2**25 // (c * size[0] * size[1])))
    confs = [torch.zeros(c, c, dtype=torch.long) for _ in heads]
    for x, y in zip(patches.split(step), maps.split(step)):
        x = (x.float() - mean) / std
        for i, (w, b) in enumerate(heads):
            logits = (x @ w + b).transpose(1, 2).reshape(len(x), c, grid, grid)
            pred = F.interpolate(logits, size=size, mode="bilinear", align_corners=False).argmax(1)
            confs[i] += confusion_matrix(y, pred, c)
    return confs


def dense_probe(
    train_patches: torch.Tensor,
    train_maps: torch.Tensor,
    val_patches: torch.Tensor,
    val_maps: torch.Tensor,
    tests: dict[str, tuple[torch.Tensor, torch.Tensor]],
    num_classes: int,
    grid: int,
    lrs: tuple[float, ...] = DEFAULT_LRS,
    epochs: int = 10,
    batch_size: int = 16,
    wd: float = 0.0,
    seed: int = 0,
) -> DenseResult:
    """Train one linear per-patch head per lr (AdamW, shared minibatches of ``batch_size`` images) and
    report the head with the best validation mIoU on every test set."""
    if train_patches.shape[1] != grid * grid:
        raise ValueError(f"dense probe: {train_patches.shape[1]} patches per image, expected grid^2 = {grid * grid}")
    targets = patch_labels(train_maps, grid, num_classes)
    if not (targets >= 0).any():
        raise ValueError("dense probe: no labelled training pixel")
    mean, std = _stats(train_patches)
    d = train_patches.shape[-1]
    # Zero init: the heads start identical and deterministic; the seed only orders the minibatches.
    heads = [
        (torch.zeros(d, num_classes, requires_grad=True), torch.zeros(num_classes, requires_grad=True)) for _ in lrs
    ]
    opt = torch.optim.AdamW([{"params": list(h), "lr": lr} for h, lr in zip(heads, lrs)], weight_decay=wd)
    gen = torch.Generator().manual_seed(seed)
    n = len(train_patches)
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=gen).split(batch_size):
            x = ((train_patches[idx].float() - mean) / std).reshape(-1, d)
            y = targets[idx].reshape(-1)
            if not (y >= 0).any():
                continue
            # Summed over heads: each head's gradient is its own loss's gradient, as if trained alone.
            loss = sum(F.cross_entropy(x @ w + b, y, ignore_index=-1) for w, b in heads)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():
        heads = [(w.detach(), b.detach()) for w, b in heads]
        val = [
            miou_from_confusion(conf)[0]
            for conf in _confusions(val_patches, val_maps, heads, (mean, std), grid, num_classes)
        ]
        best = max(range(len(lrs)), key=lambda i: -1.0 if math.isnan(val[i]) else val[i])  # first lr wins ties
        result = DenseResult({}, {}, {}, lrs[best], val[best], val)
        for name, (x, maps) in tests.items():
            conf = _confusions(x, maps, [heads[best]], (mean, std), grid, num_classes)[0]
            result.miou[name], result.per_class_iou[name], result.pixel_acc[name] = miou_from_confusion(conf)
    return result
