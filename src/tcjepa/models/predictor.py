"""The JEPA predictor: a narrow ViT that maps context features plus positioned mask tokens to target features.

As in I-JEPA, the context sequence is repeated once per target block and each copy is joined with
that block's mask tokens, so the M target blocks are predicted independently. With ``text_dim`` set,
every block also carries a :class:`tcjepa.models.conditioning.TextCrossAttention` between its self-attention and its MLP
(TC-JEPA); without text inputs the predictor is exactly I-JEPA's.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .conditioning import CondOutput, TextCrossAttention, TextInputs
from .vit import MLP, Attention, gather_tokens, init_weights, rescale_residual_branches, sincos_pos_embed


class PredictorBlock(nn.Module):
    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float, text_dim: int | None, cond_heads: int, centred: bool = False
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.cond = TextCrossAttention(dim, text_dim, cond_heads, centred) if text_dim else None
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(
        self, x: torch.Tensor, text: TextInputs | None, batch: int, key_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, CondOutput | None]:
        """x (B*M, L, d); the M copies of an image are adjacent, so (B, M*L, d) is a free view.

        ``key_mask`` (B*M, L) bool, True for real tokens, keeps padded context slots out of self-attention.
        """
        x = x + self.attn(self.norm1(x), key_mask)
        out = None
        if self.cond is not None and text is not None:
            bm, length, d = x.shape
            delta, out = self.cond(x.reshape(batch, -1, d), text)
            x = x + delta.reshape(bm, length, d)
        return x + self.mlp(self.norm2(x)), out


class Predictor(nn.Module):
    def __init__(
        self,
        grid: int,
        enc_dim: int,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        text_dim: int | None = None,
        cond_heads: int | None = None,
        centred_links: bool = False,
    ):
        super().__init__()
        self.dim = dim
        self.embed = nn.Linear(enc_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.register_buffer("pos_embed", sincos_pos_embed(dim, grid), persistent=False)
        self.blocks = nn.ModuleList(
            PredictorBlock(dim, num_heads, mlp_ratio, text_dim, cond_heads or num_heads, centred_links)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.out = nn.Linear(dim, enc_dim)
        init_weights(self)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        rescale_residual_branches(self.blocks)
        for layer_id, block in enumerate(self.blocks, start=1):
            if block.cond is not None:  # the conditioner is a residual branch too
                block.cond.proj.weight.data.div_(math.sqrt(2.0 * layer_id))

    @property
    def conditioned(self) -> bool:
        return self.blocks[0].cond is not None

    def forward(
        self,
        z: torch.Tensor,
        ctx_idx: torch.Tensor,
        tgt_idx: torch.Tensor,
        text: TextInputs | None = None,
        ctx_valid: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[CondOutput]]:
        """z (B, Kc, D) context features at ``ctx_idx`` (B, Kc); ``tgt_idx`` (B, M, Kt) -> (B, M, Kt, D).

        ``ctx_valid`` (B, Kc) bool marks the real slots of a padded context (mask.truncate=pad); padded slots
        are never attended to, and the conditioner's outputs carry the matching ``query_mask``.
        """
        b, m, kt = tgt_idx.shape
        kc = ctx_idx.shape[1]
        if ctx_valid is not None and ctx_valid.shape != ctx_idx.shape:
            raise ValueError(
                f"ctx_valid {tuple(ctx_valid.shape)} must have the shape of ctx_idx {tuple(ctx_idx.shape)}; "
                "pass the mask batch's context_valid with its context (mask.truncate=pad)"
            )
        pos = self.pos_embed
        ctx = self.embed(z) + pos[ctx_idx]  # (B, Kc, d)
        masks = self.mask_token + pos[tgt_idx]  # (B, M, Kt, d)
        x = torch.cat([ctx.unsqueeze(1).expand(b, m, kc, self.dim), masks], dim=2).reshape(b * m, kc + kt, self.dim)
        key_mask = query_mask = None
        if ctx_valid is not None:
            # Every target copy sees its image's context validity; mask tokens are always real.
            real = ctx_valid.new_ones(b, m, kt)
            key_mask = torch.cat([ctx_valid.unsqueeze(1).expand(b, m, kc), real], dim=2).reshape(b * m, kc + kt)
            query_mask = key_mask.reshape(b, m * (kc + kt))  # the conditioner's (B, M*L) query axis
        outputs = []
        for block in self.blocks:
            x, out = block(x, text, b, key_mask)
            if out is not None:
                out.query_mask = query_mask
                outputs.append(out)
        pred = self.out(self.norm(x[:, kc:]))
        return pred.reshape(b, m, kt, -1), outputs


def gather_targets(h: torch.Tensor, tgt_idx: torch.Tensor) -> torch.Tensor:
    """h (B, N, D) target-encoder features, tgt_idx (B, M, Kt) -> (B, M, Kt, D)."""
    b, m, kt = tgt_idx.shape
    return gather_tokens(h, tgt_idx.reshape(b, m * kt)).reshape(b, m, kt, h.shape[-1])
