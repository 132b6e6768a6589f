"""Minimal conditioners that exercise the predictor's hook points independently of the shipped ones.

They exist to prove that the predictor's hooks work, not to be good models: each is a few lines on top
of a pooled caption vector, the mean of an image's real words over its present captions.
"""

from __future__ import annotations

import torch
from torch import nn

from tcjepa.models.conditioning import (
    INPUT,
    NORM,
    AdaLN,
    CaptionCrossAttention,
    Conditioner,
    CondSpec,
    InputShift,
    TextCrossAttention,
    TextInputs,
)


def pooled_caption(text: TextInputs) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, Dt) mean of the real words of the present captions (padding and absent captions never enter),
    and (B,) bool: the image has a caption."""
    valid = text.valid.unsqueeze(-1).to(text.text.dtype)
    pooled = (text.text * valid).sum((1, 2)) / valid.sum((1, 2)).clamp_min(1)
    return pooled, text.caption_mask.any(dim=1)


class InputAdd(Conditioner):
    """INPUT: adds a projection of the pooled caption to every token; with ``extra`` > 0 also prepends
    that many tokens made from it (sequence-style), real only for images that have a caption."""

    hooks = frozenset({INPUT})
    extra = 0

    def __init__(self, spec: CondSpec):
        super().__init__()
        self.shift = nn.Linear(spec.text_dim, spec.dim)
        self.tokens = nn.Linear(spec.text_dim, spec.dim * self.extra) if self.extra else None

    def after_init(self, layer_id: int) -> None:
        nn.init.zeros_(self.shift.weight)  # starts switched off, as AdaLN-zero does

    def prepare(self, x: torch.Tensor, text: TextInputs) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, m, _, d = x.shape
        pooled, present = pooled_caption(text)
        shift = torch.where(present[:, None], self.shift(pooled), pooled.new_zeros(()))
        x = x + shift[:, None, None]
        if self.tokens is None:
            return x, None
        extra = self.tokens(pooled).view(b, 1, self.extra, d).expand(b, m, self.extra, d)
        return torch.cat([extra, x], dim=2), present[:, None].expand(b, self.extra)


class InputPrefix(InputAdd):
    extra = 2


class NormScale(Conditioner):
    """NORM: AdaLN-style scale and shift of both block norms from the pooled caption, zero at init."""

    hooks = frozenset({NORM})

    def __init__(self, spec: CondSpec):
        super().__init__()
        self.mod = nn.Linear(spec.text_dim, 4 * spec.dim)

    def after_init(self, layer_id: int) -> None:
        nn.init.zeros_(self.mod.weight)
        nn.init.zeros_(self.mod.bias)

    def modulate(self, h: torch.Tensor, site: str, text: TextInputs) -> torch.Tensor:
        pooled, present = pooled_caption(text)
        mod = torch.where(present[:, None], self.mod(pooled), pooled.new_zeros(()))
        scale1, shift1, scale2, shift2 = mod[:, None].chunk(4, dim=-1)
        scale, shift = (scale1, shift1) if site == "norm1" else (scale2, shift2)
        return h * (1 + scale) + shift


class PrefixWords(Conditioner):
    """A family using two sites: prefix tokens at the input, the words cross-attention in the blocks."""

    hooks = frozenset({INPUT}) | TextCrossAttention.hooks
    word_links = True

    @classmethod
    def from_spec(cls, spec: CondSpec) -> Conditioner:
        return InputPrefix(spec) if spec.layer is None else TextCrossAttention.from_spec(spec)


HOOK_CONDITIONERS: dict[str, type[Conditioner]] = {
    "input-add": InputAdd,
    "input-prefix": InputPrefix,
    "norm-scale": NormScale,
    "prefix-words": PrefixWords,
}


# The output layers whose zero makes a conditioner's contribution exactly nothing.
OUTPUTS = {
    TextCrossAttention: ["proj"],
    CaptionCrossAttention: ["proj"],
    AdaLN: ["mod1", "mod2"],
    InputShift: ["proj"],
    InputAdd: ["shift"],
    NormScale: ["mod"],
}


def switch_off(cond: nn.Module) -> None:
    """Zero the output of a conditioner whose contribution is then exactly nothing."""
    with torch.no_grad():
        for out in OUTPUTS[type(cond)]:
            getattr(cond, out).weight.zero_()
            getattr(cond, out).bias.zero_()
