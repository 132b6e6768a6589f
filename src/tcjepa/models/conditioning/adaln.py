"""``adaln``: adaptive LayerNorm, the captions as a per-block scale and shift of the predictor's norms.

At the ``NORM`` hook of every conditioned block, the outputs h of ``norm1`` (before self-attention) and
``norm2`` (before the MLP) become h * (1 + scale) + shift, with scale and shift a linear map of SiLU of the
image's pooled caption vector (:func:`.pooling.image_vector`: the mean over present captions of each one's
mean word state), as in DiT's adaLN. Both maps start at zero, so the predictor starts as I-JEPA's exactly
and the text enters as training finds it useful (their weights still get gradients at zero).

The text reaches every token of an image alike: no patch-word links (``word_links`` False), so the sparsity
regularisers, the pointing game and word maps do not apply. One map per norm rather than one shared
4d-wide map computed twice: each is then evaluated once per block call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import NORM, Conditioner, CondSpec, TextInputs
from .pooling import image_vector


class AdaLN(Conditioner):
    hooks = frozenset({NORM})

    def __init__(self, dim: int, text_dim: int):
        super().__init__()
        self.mod1 = nn.Linear(text_dim, 2 * dim)  # scale and shift after norm1
        self.mod2 = nn.Linear(text_dim, 2 * dim)  # and after norm2

    @classmethod
    def from_spec(cls, spec: CondSpec) -> AdaLN:
        return cls(spec.dim, spec.text_dim)

    def after_init(self, layer_id: int) -> None:
        for mod in (self.mod1, self.mod2):  # identity at start (AdaLN-zero)
            nn.init.zeros_(mod.weight)
            nn.init.zeros_(mod.bias)

    def modulate(self, h: torch.Tensor, site: str, text: TextInputs) -> torch.Tensor:
        pooled, present = image_vector(text)
        mod = (self.mod1 if site == "norm1" else self.mod2)(F.silu(pooled))  # (B, 2d)
        mod = torch.where(present[:, None], mod, torch.zeros_like(mod))  # no captions: identity
        scale, shift = mod[:, None].chunk(2, dim=-1)
        return h * (1 + scale) + shift
