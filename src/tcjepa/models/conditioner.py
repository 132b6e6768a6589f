"""TC-JEPA's fine-grained text conditioner: residual cross-attention from patch tokens to caption words.

One predictor layer's worth (paper Eq. 2 and 4, with the project's choices in DESIGN.md §4):
- every query token (context and mask tokens) attends to each caption's word states separately;
  the query projection is computed once and shared by the N captions, and the text keys/values are
  computed once per image (the I-JEPA predictor's per-target-block copies of an image are folded
  into one long query axis, so they share them too);
- padding words are masked in the softmax; absent captions are excluded from the max-pool over
  captions; an image without captions gets no update (the text-free path);
- the output projection is folded into the values per head (softmax(qK) V W_o == softmax(qK) (V W_o)),
  which is cheaper whenever heads x words < width + words and is exactly the same function;
- the rectified patch-word cosines of Eq. 3 use the full projected width (one extra GEMM on the same
  projected queries and keys; the attention logits are scaled and masked in place, so they are not reused).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# Value given to an absent caption's update: far below any real one, yet finite after summing over heads
# (fp32 and bf16 both hold it), so neither the max-pool nor its gradient ever sees inf or NaN.
ABSENT = -1e30


@dataclass
class TextInputs:
    """Caption word states for a batch; see DESIGN.md §3."""

    text: torch.Tensor  # (B, N, S, Dt) word states
    text_mask: torch.Tensor  # (B, N, S) True for real words
    caption_mask: torch.Tensor  # (B, N) True for captions present

    @property
    def valid(self) -> torch.Tensor:
        """(B, N, S): real words of present captions."""
        return self.text_mask & self.caption_mask.unsqueeze(-1)

    @classmethod
    def from_batch(cls, batch: dict) -> TextInputs | None:
        if "text" not in batch or batch["text"] is None or not bool(batch["caption_mask"].any()):
            return None
        return cls(batch["text"], batch["text_mask"].bool(), batch["caption_mask"].bool())


@dataclass
class CondOutput:
    """What one conditioned layer exposes to the regularisers and monitors."""

    cos: torch.Tensor  # (B, T, N, S) patch-word cosine over the full projected width (not rectified)
    attn: torch.Tensor  # (B, H, T, N, S) softmax attention over each caption's words


class TextCrossAttention(nn.Module):
    def __init__(self, dim: int, text_dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"predictor width {dim} is not divisible by {num_heads} cross-attention heads")
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(text_dim, dim)
        self.v = nn.Linear(text_dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, text: TextInputs) -> tuple[torch.Tensor, CondOutput]:
        """x (B, T, d) -> residual update (B, T, d), max-pooled over the captions present."""
        b, t, d = x.shape
        _, n, s, _ = text.text.shape
        h = self.num_heads
        dh = d // h
        q = self.q(self.norm(x))  # (B, T, d), shared by all captions
        k = self.k(text.text)  # (B, N, S, d), once per image
        v = self.v(text.text)
        logits = q.view(b, t, h, dh).transpose(1, 2) @ k.view(b, n * s, h, dh).permute(0, 2, 3, 1)  # (B,H,T,N*S)
        logits = logits.mul_(dh**-0.5).view(b, h, t, n, s).add_(_padding_bias(text, logits.dtype))
        attn = _softmax(logits)  # a fully padded (absent) caption gives a uniform row; it is pooled out below
        # Fold the output projection into the values: (B, N, H*S, d).
        v_o = torch.einsum("bnshk,ohk->bnhso", v.view(b, n, s, h, dh), self.proj.weight.view(d, h, dh))
        # An absent caption's update is pushed far below any real one, so the max-pool never picks it;
        # doing this on the small value tensor spares a pass over the (B, N, T, d) output.
        v_o = v_o.masked_fill(~text.caption_mask.view(b, n, 1, 1, 1), ABSENT)
        per_caption = attn.permute(0, 3, 2, 1, 4).reshape(b, n, t, h * s) @ v_o.reshape(b, n, h * s, d)
        pooled = per_caption.amax(dim=1) + self.proj.bias  # the bias is the same for every caption
        delta = torch.where(text.caption_mask.any(dim=1).view(b, 1, 1), pooled, torch.zeros_like(pooled))
        # Full-width patch-word cosines (Eq. 3): one GEMM on the same projected queries and keys.
        dot = (q @ k.view(b, n * s, d).transpose(1, 2)).view(b, t, n, s)
        norms = q.norm(dim=-1).view(b, t, 1, 1) * k.norm(dim=-1).view(b, 1, n, s)
        return delta, CondOutput(cos=dot / norms.clamp_min(1e-6), attn=attn)


def _padding_bias(text: TextInputs, dtype: torch.dtype) -> torch.Tensor:
    """(B, 1, 1, N, S) additive mask: 0 for real words, a huge negative for padding and absent captions."""
    b, n, s = text.text_mask.shape
    bias = torch.zeros(b, 1, 1, n, s, dtype=dtype, device=text.text.device)
    return bias.masked_fill_(~text.valid.view(b, 1, 1, n, s), torch.finfo(dtype).min / 2)  # /2: no overflow


def _softmax(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis. Rows here are short (one caption's words), where aten's kernel is
    about twice as slow on CPU as these three vectorised passes; the result is the same to rounding."""
    e = (logits - logits.detach().amax(dim=-1, keepdim=True)).exp()
    return e / e.sum(dim=-1, keepdim=True)
