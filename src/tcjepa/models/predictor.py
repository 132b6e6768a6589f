"""The JEPA predictor: a narrow ViT that maps context features plus positioned mask tokens to target features.

As in I-JEPA, the context sequence is repeated once per target block and each copy is joined with
that block's mask tokens, so the M target blocks are predicted independently. With ``text_dim`` set,
text enters through the conditioner named by ``conditioning`` (``model.predictor.conditioning``,
registry in :mod:`tcjepa.models.conditioning`) at the hook points it declares: before the first block
(``prepare``, which may prepend tokens), as a residual between a block's self-attention and its MLP,
and as a modulation of a block's norm outputs. ``cond_layers`` picks the blocks that get one; the
others hold no conditioner parameters. The default, ``words`` at every block, is TC-JEPA; without text
inputs, or with ``conditioning="none"``, the predictor is exactly I-JEPA's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..config import cond_layer_indices
from .conditioning import (
    NORM,
    RESIDUAL,
    Conditioner,
    CondOutput,
    CondSpec,
    TextInputs,
    build_conditioner,
    check_fusion,
    conditioner_class,
)
from .vit import MLP, Attention, gather_tokens, init_weights, rescale_residual_branches, run_block, sincos_pos_embed


class PredictorBlock(nn.Module):
    """``cond`` builds this block's conditioner (or None); it is called between the self-attention and the
    norm before the MLP, so the parameters are created, and drawn at initialisation, in that order."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float, cond: Callable[[], Conditioner | None] | None = None
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.cond = cond() if cond is not None else None
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def _normed(self, norm: nn.LayerNorm, site: str, x: torch.Tensor, text: TextInputs | None, batch: int):
        h = norm(x)
        if text is None or self.cond is None or NORM not in self.cond.hooks:
            return h
        return self.cond.modulate(h.reshape(batch, -1, h.shape[-1]), site, text).reshape(h.shape)

    def forward(
        self, x: torch.Tensor, text: TextInputs | None, batch: int, key_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, CondOutput | None]:
        """x (B*M, L, d); the M copies of an image are adjacent, so (B, M*L, d) is a free view, and the
        conditioner's hooks see that view.

        ``key_mask`` (B*M, L) bool, True for real tokens, keeps padded slots out of self-attention.
        """
        x = x + self.attn(self._normed(self.norm1, "norm1", x, text, batch), key_mask)
        out = None
        if text is not None and self.cond is not None and RESIDUAL in self.cond.hooks:
            bm, length, d = x.shape
            delta, out = self.cond.residual(x.reshape(batch, -1, d), text)
            x = x + delta.reshape(bm, length, d)
        return x + self.mlp(self._normed(self.norm2, "norm2", x, text, batch)), out


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
        conditioning: str = "words",
        cond_layers: str | Sequence[int] = "all",
        caption_fusion: str = "max",
        out_dim: int | None = None,
    ):
        super().__init__()
        self.dim = dim
        # Both keys are checked even without text, so a typo fails for an I-JEPA run too.
        conditioner_class(conditioning)
        check_fusion(caption_fusion)
        layers = set(cond_layer_indices(cond_layers, depth))
        self.conditioning = conditioning if text_dim else "none"

        def site(layer: int | None) -> Callable[[], Conditioner | None] | None:
            if not text_dim or (layer is not None and layer not in layers):
                return None
            spec = CondSpec(dim, text_dim, cond_heads or num_heads, centred_links, layer, depth, caption_fusion)
            return lambda: build_conditioner(self.conditioning, spec)

        self.embed = nn.Linear(enc_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.register_buffer("pos_embed", sincos_pos_embed(dim, grid), persistent=False)
        self.blocks = nn.ModuleList(PredictorBlock(dim, num_heads, mlp_ratio, site(i)) for i in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.out = nn.Linear(dim, out_dim or enc_dim)  # out_dim: the target space's width (a frozen teacher's)
        self.checkpointing = False  # recompute block activations in backward (vit.run_block)
        make_input = site(None)
        self.cond_input = make_input() if make_input is not None else None
        init_weights(self)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        rescale_residual_branches(self.blocks)
        if self.cond_input is not None:
            self.cond_input.after_init(0)
        for layer_id, block in enumerate(self.blocks, start=1):
            if block.cond is not None:  # e.g. the words update is a residual branch too
                block.cond.after_init(layer_id)

    @property
    def conditioners(self) -> list[Conditioner]:
        """Every conditioner instance: the input hook's first, then the conditioned blocks' in order."""
        blocks = [block.cond for block in self.blocks if block.cond is not None]
        return ([self.cond_input] if self.cond_input is not None else []) + blocks

    @property
    def conditioned(self) -> bool:
        return bool(self.conditioners)

    @property
    def has_word_links(self) -> bool:
        """Whether ``forward`` returns patch-word links (:class:`CondOutput`) for the regularisers, the
        dead-zone monitor, grounding and word maps."""
        return any(c.word_links for c in self.conditioners)

    def cond_params(self) -> dict[str, nn.Parameter]:
        """The conditioners' parameters by their name in this module (e.g. ``blocks.0.cond.q.weight``)."""
        return {n: p for n, p in self.named_parameters() if n.startswith("cond_input.") or ".cond." in n}

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
        x = torch.cat([ctx.unsqueeze(1).expand(b, m, kc, self.dim), masks], dim=2)  # (B, M, Kc + Kt, d)
        extra_valid = None
        if text is not None and self.cond_input is not None:
            x, extra_valid = self.cond_input.prepare(x, text)
        length = x.shape[2]
        extra = length - (kc + kt)  # tokens the input hook prepended to every copy
        if extra < 0 or x.shape[:2] != (b, m):
            raise ValueError(f"{type(self.cond_input).__name__}.prepare may only prepend tokens; got {tuple(x.shape)}")
        x = x.reshape(b * m, length, self.dim)
        key_mask, query_mask = self._masks(b, m, kc, kt, extra, ctx_valid, extra_valid, ctx_idx.device)
        outputs = []
        for block in self.blocks:
            x, out = run_block(block, self.checkpointing, x, text, b, key_mask)
            if out is not None:
                out.query_mask = query_mask
                out.prefix = extra
                outputs.append(out)
        pred = self.out(self.norm(x[:, extra + kc :]))
        return pred.reshape(b, m, kt, -1), outputs

    @staticmethod
    def _masks(
        b: int,
        m: int,
        kc: int,
        kt: int,
        extra: int,
        ctx_valid: torch.Tensor | None,
        extra_valid: torch.Tensor | None,
        device: torch.device,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Self-attention's key mask (B*M, L) and the conditioners' query mask (B, M*L); None when all real.

        Every target copy sees its image's context validity; mask tokens are always real. Prepended tokens
        are keys when ``extra_valid`` says so, and never queries of the links (they are not patches).
        """
        if ctx_valid is None and not extra:
            return None, None
        real_ctx = ctx_valid if ctx_valid is not None else torch.ones(b, kc, dtype=torch.bool, device=device)
        keys = [real_ctx.unsqueeze(1).expand(b, m, kc), real_ctx.new_ones(b, m, kt)]
        queries = list(keys)
        if extra:
            real_extra = extra_valid if extra_valid is not None else real_ctx.new_ones(b, extra)
            keys.insert(0, real_extra.unsqueeze(1).expand(b, m, extra))
            queries.insert(0, real_ctx.new_zeros(b, m, extra))
        length = kc + kt + extra
        key_mask = torch.cat(keys, dim=2).reshape(b * m, length)
        query_mask = torch.cat(queries, dim=2).reshape(b, m * length)
        if ctx_valid is None and extra_valid is None:
            key_mask = None  # every key is real: keep self-attention's unmasked path
        return key_mask, query_mask


def gather_targets(h: torch.Tensor, tgt_idx: torch.Tensor) -> torch.Tensor:
    """h (B, N, D) target-encoder features, tgt_idx (B, M, Kt) -> (B, M, Kt, D)."""
    b, m, kt = tgt_idx.shape
    return gather_tokens(h, tgt_idx.reshape(b, m * kt)).reshape(b, m, kt, h.shape[-1])
