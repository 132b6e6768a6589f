"""``sequence``: the caption words join the predictor's token sequence; self-attention does the rest.

At the ``INPUT`` hook, every word state of every caption is projected to the predictor's width once per
image and prepended to each of the image's M copies; the predictor keeps padding words and absent captions
out of self-attention (``extra_valid``), never counts the words as link queries, and reads its output after
them. The blocks hold no conditioner: text and patches mix only through the blocks' own attention.

No position or caption index is added: the frozen states already carry word order, and captions are a set.
The cost is the longer sequence, N x S more tokens in every copy through every block (``flops.py``); an
image without captions sees no word at all. No patch-word links of the kind the regularisers read, so the
sparsity regularisers, the pointing game and word maps do not apply.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import INPUT, Conditioner, CondSpec, TextInputs


class SequenceTokens(Conditioner):
    hooks = frozenset({INPUT})

    def __init__(self, dim: int, text_dim: int):
        super().__init__()
        self.proj = nn.Linear(text_dim, dim)

    @classmethod
    def from_spec(cls, spec: CondSpec) -> SequenceTokens:
        return cls(spec.dim, spec.text_dim)

    def prepare(self, x: torch.Tensor, text: TextInputs) -> tuple[torch.Tensor, torch.Tensor]:
        b, m, _, d = x.shape
        n, s = text.text_mask.shape[1:]
        words = self.proj(text.text).view(b, 1, n * s, d).expand(b, m, n * s, d)  # once per image
        return torch.cat([words, x], dim=2), text.valid.reshape(b, n * s)
