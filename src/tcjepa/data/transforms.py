"""Image transforms in plain torch (no torchvision): I-JEPA uses only a random resized crop."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_resized_crop(
    image: torch.Tensor,
    scale: tuple[float, float],
    generator: torch.Generator,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """Crop a random area fraction in ``scale`` with aspect in ``ratio`` and resize back to the input size.

    ``image`` is (3, H, W) float. With scale (1, 1) the image is returned unchanged, which is the
    default for ``shapes``: its captions name positions, and a crop would make them false.
    """
    return random_resized_crop_counted(image, scale, generator, ratio)[0]


def random_resized_crop_counted(
    image: torch.Tensor,
    scale: tuple[float, float],
    generator: torch.Generator,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[torch.Tensor, bool]:
    """:func:`random_resized_crop` plus whether it fell back to the full image, so callers can count it."""
    if scale[0] >= 1.0:
        return image, False
    _, h, w = image.shape
    area = h * w
    for _ in range(10):
        target = area * (scale[0] + (scale[1] - scale[0]) * torch.rand((), generator=generator).item())
        log_r = (
            math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * torch.rand((), generator=generator).item()
        )
        ar = math.exp(log_r)
        cw, ch = round(math.sqrt(target * ar)), round(math.sqrt(target / ar))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (), generator=generator))
            left = int(torch.randint(0, w - cw + 1, (), generator=generator))
            crop = image[:, top : top + ch, left : left + cw]
            resized = F.interpolate(crop[None], size=(h, w), mode="bilinear", align_corners=False, antialias=True)
            return resized[0], False
    return image, True  # no valid crop in 10 tries: the full image (torchvision falls back likewise), counted
