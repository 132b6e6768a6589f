"""TC-JEPA's fine-grained text conditioner, ``words``: residual cross-attention from patch tokens to caption words.

One predictor layer's worth at the ``RESIDUAL`` hook of :mod:`.base` (paper Eq. 2 and 4, with the
project's choices in docs/design.md §4.3):
- every query token (context and mask tokens) attends to each caption's word states separately;
  the query projection is computed once and shared by the N captions, and the text keys/values are
  computed once per image (the I-JEPA predictor's per-target-block copies of an image are folded
  into one long query axis, so they share them too);
- per caption the update is Eq. 2 as printed: softmax(q K_n) V_n with the heads concatenated and no
  output projection; the N updates are fused over the captions present (Eq. 4's feature-wise max by
  default, or mean or attention pooling, :mod:`.fusion`), and one output projection W_O follows.
  Projecting after the pool costs one d x d product per token instead of N (the per-caption projection
  alone would add ~2/3 of the predictor's FLOPs at N = 8), and W_O = 0 turns the conditioner off exactly
  (the I-JEPA equivalence test);
- padding words are masked in the softmax; absent captions are excluded from the fusion; an image
  without captions gets no update (the text-free path);
- the rectified patch-word cosines of Eq. 3 use the full projected width: the full q.k is the sum of
  the per-head dot products the attention already computed, so it costs no extra matrix product.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import RESIDUAL, Conditioner, CondOutput, CondSpec, TextInputs
from .fusion import CaptionFusion


class ResidualCrossAttention(Conditioner):
    """The weights of a pre-LN residual cross-attention from patch tokens to text (norm, W_Q, W_K, W_V, W_O),
    created in that order, and W_O scaled with depth like the blocks' residual branches: shared by the
    word-level conditioner below and the caption-level one (:mod:`.caption`)."""

    hooks = frozenset({RESIDUAL})

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

    def project_words(self, text: TextInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, N, S, d) of the real words; padding slots and absent captions get zeros.

        Padding never reaches a result (its attention weight is exactly 0 and every regulariser and monitor
        reads real words only), so only the real words are projected, K and V in one product: padding is
        ~40% of the slots of the shapes captions and more where captions are padded to a long max_len.
        """
        b, n, s, _ = text.text.shape
        valid = text.valid
        d = self.k.out_features
        weight, bias = torch.cat([self.k.weight, self.v.weight]), torch.cat([self.k.bias, self.v.bias])
        if torch.compiler.is_compiling():  # a data-dependent row count would split the compiled graph
            out = F.linear(text.text, weight, bias) * valid.unsqueeze(-1)
        else:
            kv = F.linear(text.text[valid], weight, bias)  # bf16 under autocast: the zeros follow its dtype
            out = kv.new_zeros(b, n, s, 2 * d).index_put((valid,), kv)
        return out[..., :d], out[..., d:]

    def after_init(self, layer_id: int) -> None:
        """The update is a residual branch: scaled down with depth like the blocks' attn.proj and fc2."""
        self.proj.weight.data.div_(math.sqrt(2.0 * layer_id))


class TextCrossAttention(ResidualCrossAttention):
    """``centred_links``: the patch-word similarity of the regularisers and monitors uses each caption's keys
    minus their mean over its real words (see :mod:`tcjepa.losses.sparsity`); attention is unaffected.

    Submodules are created in the order norm, q, k, v, proj and named as before the conditioner family
    existed, so checkpoints keep their keys (``predictor.blocks.<i>.cond.q.weight``) and initialisation
    draws the same random numbers.
    """

    word_links = True
    fuses_captions = True

    def __init__(self, dim: int, text_dim: int, num_heads: int, centred_links: bool = False, fusion: str = "max"):
        super().__init__(dim, text_dim, num_heads)
        self.centred_links = centred_links
        self.fuse = CaptionFusion(fusion, dim, num_heads)  # created last: the others draw as before

    @classmethod
    def from_spec(cls, spec: CondSpec) -> TextCrossAttention:
        return cls(spec.dim, spec.text_dim, spec.num_heads, spec.centred_links, spec.fusion)

    def residual(self, x: torch.Tensor, text: TextInputs) -> tuple[torch.Tensor, CondOutput]:
        return self(x, text)

    def forward(self, x: torch.Tensor, text: TextInputs) -> tuple[torch.Tensor, CondOutput]:
        """x (B, T, d) -> residual update (B, T, d), fused over the captions present."""
        b, t, d = x.shape
        _, n, s, _ = text.text.shape
        h = self.num_heads
        dh = d // h
        q = self.q(self.norm(x))  # (B, T, d), shared by all captions
        k, v = self.project_words(text)  # (B, N, S, d) each, once per image
        dots = q.view(b, t, h, dh).transpose(1, 2) @ k.view(b, n * s, h, dh).permute(0, 2, 3, 1)  # (B,H,T,N*S)
        dots = dots.view(b, h, t, n, s)
        logits = dots * dh**-0.5 + _padding_bias(text, dots.dtype)
        attn = _softmax(logits)  # a fully padded (absent) caption gives a uniform row; it is pooled out below
        v = self.fuse.absent_values(v, text.caption_mask)  # max fusion excludes absent captions here
        per_caption = attn.permute(0, 3, 1, 2, 4) @ v.view(b, n, s, h, dh).transpose(2, 3)  # (B, N, H, T, dh)
        pooled = self.fuse(per_caption, text.caption_mask).transpose(1, 2).reshape(b, t, d)
        present = text.caption_mask.any(dim=1).view(b, 1, 1)
        delta = self.proj(torch.where(present, pooled, torch.zeros_like(pooled)))
        delta = torch.where(present, delta, torch.zeros_like(delta))  # no captions: no update, not even the bias
        # Full-width patch-word cosines (Eq. 3): q.k summed over heads, over the norms of q and k.
        full = dots.sum(dim=1)  # (B, T, N, S)
        if self.centred_links:
            # q.(k_s - mean k) = q.k_s - q.(mean k): the softmax ignores this per-token shift, the cosine does not.
            valid = text.valid.unsqueeze(-1).to(k.dtype)  # (B, N, S, 1)
            k_mean = (k * valid).sum(2) / valid.sum(2).clamp_min(1)  # (B, N, d)
            full = full - (q @ k_mean.transpose(1, 2)).unsqueeze(-1)
            k = k - k_mean.unsqueeze(2)
        norms = q.norm(dim=-1).view(b, t, 1, 1) * k.norm(dim=-1).view(b, 1, n, s)
        return delta, CondOutput(cos=full / norms.clamp_min(1e-6), attn=attn)


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
