"""Pooled text for the conditioners that do not read single words: one vector per caption, or per image.

Padding words and absent captions never enter a mean, whatever their (random) states: the masks of
:class:`.base.TextInputs` weight them by exactly zero.
"""

from __future__ import annotations

import torch

from .base import TextInputs


def caption_vectors(text: TextInputs) -> torch.Tensor:
    """(B, N, Dt): the mean of each caption's real words; zero for an absent caption."""
    valid = text.valid.unsqueeze(-1).to(text.text.dtype)  # (B, N, S, 1)
    return (text.text * valid).sum(2) / valid.sum(2).clamp_min(1)


def image_vector(text: TextInputs) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, Dt) the mean of the present captions' vectors, each caption counting once whatever its length,
    and (B,) bool: the image has a caption (otherwise the vector is zero and must not be used)."""
    present = text.caption_mask
    weights = present.unsqueeze(-1).to(text.text.dtype)
    pooled = (caption_vectors(text) * weights).sum(1) / weights.sum(1).clamp_min(1)
    return pooled, present.any(dim=1)
