"""``caption``: residual cross-attention from patch tokens to whole captions, one pooled vector each.

The caption-level ablation of TC-JEPA's word cross-attention (:mod:`.words`): the same place in the block
(``RESIDUAL``, pre-LN, multi-head, one output projection W_O that starts scaled like the blocks' residual
branches), but the keys and values are the N captions' mean word states (:func:`.pooling.caption_vectors`)
instead of their words.

Why one softmax over the captions rather than one attention per caption fused afterwards: a caption here
is a single key, and a softmax over one key is 1, so a per-caption update would be W_V c_n whatever the
patch, q and K would get no gradient, and every patch of an image would receive the same vector. Attending
over the present captions lets each patch pick the captions that concern it; that softmax is the fusion,
so ``model.predictor.caption_fusion`` does not apply. Absent captions are masked out of the softmax; an
image without captions gets no update. There are no patch-word links (``word_links`` False), so the
sparsity regularisers, the pointing game and word maps do not apply.
"""

from __future__ import annotations

import torch

from .base import CondSpec, TextInputs
from .pooling import caption_vectors
from .words import ResidualCrossAttention


class CaptionCrossAttention(ResidualCrossAttention):
    @classmethod
    def from_spec(cls, spec: CondSpec) -> CaptionCrossAttention:
        return cls(spec.dim, spec.text_dim, spec.num_heads)

    def residual(self, x: torch.Tensor, text: TextInputs) -> tuple[torch.Tensor, None]:
        """x (B, T, d) -> residual update (B, T, d); no links."""
        b, t, d = x.shape
        n = text.caption_mask.shape[1]
        h = self.num_heads
        dh = d // h
        captions = caption_vectors(text)  # (B, N, Dt)
        q = self.q(self.norm(x)).view(b, t, h, dh).transpose(1, 2)  # (B, H, T, dh)
        k = self.k(captions).view(b, n, h, dh).permute(0, 2, 3, 1)  # (B, H, dh, N)
        v = self.v(captions).view(b, n, h, dh).transpose(1, 2)  # (B, H, N, dh)
        logits = (q @ k) * dh**-0.5  # (B, H, T, N)
        absent = ~text.caption_mask.view(b, 1, 1, n)
        attn = logits.masked_fill(absent, torch.finfo(logits.dtype).min / 2).softmax(dim=-1)
        out = self.proj((attn @ v).transpose(1, 2).reshape(b, t, d))
        present = text.caption_mask.any(dim=1).view(b, 1, 1)
        return torch.where(present, out, torch.zeros_like(out)), None  # no captions: no update, not even the bias
