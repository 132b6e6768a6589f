"""What every text conditioner of the predictor shares: its inputs, its exposed links, and its hook points.

The paper's conditioning variants differ in *where* text enters the predictor, not in what the predictor
is, so :class:`tcjepa.models.predictor.Predictor` offers three hook points and a conditioner declares the
ones it uses (``Conditioner.hooks``):

- ``INPUT`` (``prepare``): once, before the first block. It may change the tokens and prepend extra
  ones (e.g. caption tokens for sequence conditioning); the predictor slices its output after the
  prepended tokens and keeps padded extras out of self-attention. One instance per predictor.
- ``RESIDUAL`` (``residual``): in a block, between self-attention and the MLP, a residual update
  (TC-JEPA's word cross-attention). One instance per conditioned block.
- ``NORM`` (``modulate``): in a block, a change of the outputs of the block's norms ``norm1`` (before
  self-attention) and ``norm2`` (before the MLP), e.g. AdaLN's scale and shift from a pooled caption.
  One instance per conditioned block (the same one as for ``RESIDUAL`` when a class uses both).

Which blocks are conditioned is ``model.predictor.cond_layers``; blocks left out get no conditioner
and no parameters. ``Conditioner.word_links`` says whether the conditioner exposes patch-word links
(:class:`CondOutput`): only then do the TC-JEPA regularisers, the dead-zone monitor, grounding and the
word maps have something to read.

Block hooks see the tokens folded per image, (B, T, d) with T = M x L: the predictor's M per-target
copies of an image share one query axis, so text is projected once per image, not once per copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

INPUT, RESIDUAL, NORM = "input", "residual", "norm"
BLOCK_HOOKS = frozenset({RESIDUAL, NORM})


@dataclass
class TextInputs:
    """Caption word states for a batch; see docs/design.md §3."""

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
    """What one conditioned layer exposes to the regularisers and monitors (conditioners with word links)."""

    cos: torch.Tensor  # (B, T, N, S) patch-word cosine over the full projected width (not rectified); 0 off real words
    attn: torch.Tensor  # (B, H, T, N, S) softmax attention over each caption's words
    # (B, T) bool, True for real query tokens; None when none is padding. Set by the predictor, since the
    # conditioner cannot tell a padded context slot (mask.truncate=pad) or a prepended extra token from a
    # patch or mask token. Extra tokens are never counted as queries: they are not patches.
    query_mask: torch.Tensor | None = None
    # Tokens the input hook prepended to each copy: a copy's context tokens start at this offset of its
    # (prefix + Kc + Kt) slice of the query axis. Set by the predictor.
    prefix: int = 0


@dataclass(frozen=True)
class CondSpec:
    """What a conditioner is built from; ``layer`` is the block index, or None for the input hook."""

    dim: int  # predictor width
    text_dim: int  # width of the caption word states
    num_heads: int  # model.predictor.cond_heads, default the predictor's heads
    centred_links: bool = False  # loss.centred
    layer: int | None = None
    depth: int = 1  # predictor depth
    fusion: str = "max"  # model.predictor.caption_fusion, for conditioners that fuse per-caption updates


class Conditioner(nn.Module):
    """Base of the conditioners in :data:`tcjepa.models.conditioning.CONDITIONERS`.

    Subclasses set ``hooks`` and implement the matching methods; the predictor calls nothing else. The
    text-free path needs no code here: without captions in the batch the predictor skips every hook.
    """

    hooks: ClassVar[frozenset[str]] = frozenset()
    word_links: ClassVar[bool] = False  # residual() returns a CondOutput
    # Conditions on each caption separately and then fuses the N results (model.predictor.caption_fusion).
    fuses_captions: ClassVar[bool] = False
    # Conditioners with word links read this flag (loss.centred); grounding sets it to compare both views.
    centred_links: bool = False

    @classmethod
    def from_spec(cls, spec: CondSpec) -> Conditioner:
        return cls(spec)  # type: ignore[call-arg]

    def prepare(self, x: torch.Tensor, text: TextInputs) -> tuple[torch.Tensor, torch.Tensor | None]:
        """INPUT. x (B, M, L, d) -> (x' (B, M, E + L, d), extra_valid (B, E) bool or None = all real).

        The E extra tokens come first in every copy; E may be 0."""
        raise NotImplementedError(f"{type(self).__name__} declares no input hook")

    def residual(self, x: torch.Tensor, text: TextInputs) -> tuple[torch.Tensor, CondOutput | None]:
        """RESIDUAL. x (B, T, d) after self-attention -> (update added to x, links or None)."""
        raise NotImplementedError(f"{type(self).__name__} declares no residual hook")

    def modulate(self, h: torch.Tensor, site: str, text: TextInputs) -> torch.Tensor:
        """NORM. h (B, T, d), the output of the block's norm ``site`` ("norm1" or "norm2") -> same shape."""
        raise NotImplementedError(f"{type(self).__name__} declares no norm hook")

    def after_init(self, layer_id: int) -> None:
        """Called once after the predictor's own initialisation; ``layer_id`` counts blocks from 1 (0 for
        the input hook). Residual branches use it to scale their output as the blocks' branches are."""
