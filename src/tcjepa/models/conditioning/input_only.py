"""``input``: the captions enter once, at the predictor's input, and nowhere else.

At the ``INPUT`` hook, a projection of the image's pooled caption vector (:func:`.pooling.image_vector`) is
added to every token, context and mask tokens alike, before the first block; the blocks hold no conditioner.
The projection starts at zero, so the predictor starts as I-JEPA's exactly. This is the weakest placement:
it asks whether conditioning *every* layer (TC-JEPA) matters. Adding rather than prepending keeps the
sequence length, and so the predictor's cost, unchanged (prepending is ``sequence``). No patch-word links,
so the sparsity regularisers, the pointing game and word maps do not apply.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import INPUT, Conditioner, CondSpec, TextInputs
from .pooling import image_vector


class InputShift(Conditioner):
    hooks = frozenset({INPUT})

    def __init__(self, dim: int, text_dim: int):
        super().__init__()
        self.proj = nn.Linear(text_dim, dim)

    @classmethod
    def from_spec(cls, spec: CondSpec) -> InputShift:
        return cls(spec.dim, spec.text_dim)

    def after_init(self, layer_id: int) -> None:
        nn.init.zeros_(self.proj.weight)  # the bias is zero already: starts switched off
        nn.init.zeros_(self.proj.bias)

    def prepare(self, x: torch.Tensor, text: TextInputs) -> tuple[torch.Tensor, None]:
        pooled, present = image_vector(text)
        shift = self.proj(pooled)
        shift = torch.where(present[:, None], shift, torch.zeros_like(shift))  # no captions: unchanged
        return x + shift[:, None, None], None
