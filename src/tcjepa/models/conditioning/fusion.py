"""Caption fusion, ``model.predictor.caption_fusion``: how N per-caption updates of a token become one.

The paper max-pools feature-wise (Eq. 4) and reports average- and attention-pooling within 0.3 top-1 of it
(Table 6). All three run over the captions present only: an absent caption can never win the max, gets no
share of the mean and a softmax weight of exactly zero in the attention pooling.

- ``max``: feature-wise maximum. Absent captions are pushed out through their *values* (:func:`absent_values`)
  before the per-caption attention, which spares a pass over the large (B, N, H, T, dh) output; the result is
  the same bits as before fusion was configurable.
- ``mean``: the mean over the present captions.
- ``attention``: a learned query scores each caption's update of a token (full width, 1/sqrt(d)); the
  softmax over the present captions weights them. The query starts at zero, i.e. as the mean.
"""

from __future__ import annotations

import torch
from torch import nn

from ...config import ConfigError

FUSIONS = ("max", "mean", "attention")

# Value given to an absent caption's values under max fusion: far below any real one, yet finite after the
# attention's weighted sum (fp32 and bf16 both hold it), so neither the max nor its gradient sees inf or NaN.
ABSENT = -1e30


def check_fusion(mode: str) -> None:
    if mode not in FUSIONS:
        raise ConfigError(
            f"config key 'model.predictor.caption_fusion' must be one of {', '.join(FUSIONS)}; got {mode!r}"
        )


class CaptionFusion(nn.Module):
    def __init__(self, mode: str, dim: int, num_heads: int):
        super().__init__()
        check_fusion(mode)
        self.mode = mode
        self.scale = dim**-0.5
        # Only the attention pooling has parameters, so max and mean keep the checkpoint keys of before.
        self.query = nn.Parameter(torch.zeros(num_heads, dim // num_heads)) if mode == "attention" else None

    def absent_values(self, v: torch.Tensor, caption_mask: torch.Tensor) -> torch.Tensor:
        """v (B, N, ...) per-caption values -> the values the per-caption attention should use."""
        if self.mode != "max":
            return v  # mean and attention mask the captions' weights instead
        return v.masked_fill(~caption_mask.view(*caption_mask.shape, *[1] * (v.dim() - 2)), ABSENT)

    def forward(self, per_caption: torch.Tensor, caption_mask: torch.Tensor) -> torch.Tensor:
        """per_caption (B, N, H, T, dh), caption_mask (B, N) -> (B, H, T, dh) fused over the present captions.

        An image without captions gets a finite, meaningless result; the conditioner zeroes its update."""
        if self.mode == "max":
            return per_caption.max(dim=1).values
        b, n = caption_mask.shape
        if self.mode == "mean":
            w = caption_mask.to(per_caption.dtype)
            w = (w / w.sum(1, keepdim=True).clamp_min(1)).view(b, n, 1, 1, 1)
            return (per_caption * w).sum(1)
        scores = torch.einsum("bnhtk,hk->bnt", per_caption, self.query) * self.scale
        scores = scores.masked_fill(~caption_mask.view(b, n, 1), torch.finfo(scores.dtype).min / 2)
        weights = scores.softmax(dim=1)  # over captions; an absent one gets exp(-huge) = 0 exactly
        return torch.einsum("bnt,bnhtk->bhtk", weights, per_caption)
