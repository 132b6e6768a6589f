"""Patch-word sparsity and cross-layer consistency regularisers (paper Eq. 3-4) and their variants.

All forms work on the same per-layer patch-word similarities of the conditioner, for every query
token (context and mask tokens; the I-JEPA predictor holds one copy of the context per target block,
and each copy counts, since each is a different feature) and every real word of every caption present.
Padding words and absent captions never contribute, nor do padded context slots (mask.truncate=pad,
``CondOutput.query_mask``). Per (image, caption) the term is averaged over tokens and layers; Eq. 4's
1/N sum is then the mean over the captions actually present.

Forms (``loss.sparse_form``):
- ``paper``: L1 of O = relu(cos), summed over words, exactly Eq. 3. Its trivial minimiser is "every
  cosine <= 0", after which it gives no gradient (docs/method.md §5, docs/findings.md §1).
- ``mean``: the same L1 averaged over the caption's real words, so caption length does not scale it.
- ``margin``: relu(cos - tau) averaged over words: cosines in (0, tau] are free.
- ``topk``: relu(cos) of all but the k largest words per token, averaged over words.
- ``entropy``: entropy of the softmax attention over each caption's words (mean over heads).
- ``none``: no regulariser.
The consistency term is the L1 distance of each layer's map to the layer mean, on the map the form
penalises (relu(cos), relu(cos - tau), or head-averaged attention for ``entropy``).

Why the literal form dies, and ``loss.centred``: softmax attention over a caption's words is
invariant to adding one constant to all of a token's logits, so the prediction loss is (nearly)
indifferent to the query's component along the caption's mean key direction, while the L1 term pays
for every positive cosine. Turning the query away from the mean key makes every cosine negative at no
cost to the prediction: the regulariser's minimum is free to reach and it then gives no gradient.
With ``loss.centred=true`` the similarity is taken against the caption's keys minus their mean over
its real words. Attention is unchanged (a per-token shift of the logits), but the centred dots of a
token sum to zero over the words, so they cannot all be negative: the only way to lower the penalty
is to concentrate the token's preference on fewer words, or to stop discriminating words at all,
which the prediction loss pays for. That is the trade-off sparsity is meant to strike.
"""

from __future__ import annotations

import torch

from ..models.conditioning import CondOutput, TextInputs

FORMS = ("paper", "mean", "margin", "topk", "entropy", "none")


def link_maps(outputs: list[CondOutput], form: str, margin: float = 0.1) -> torch.Tensor:
    """(layers, B, T, N, S) non-negative patch-word link strengths for ``form``."""
    if form == "entropy":
        return torch.stack([o.attn.mean(dim=1) for o in outputs])
    shift = margin if form == "margin" else 0.0
    return torch.stack([torch.relu(o.cos - shift) for o in outputs])


def _query_masks(outputs: list[CondOutput]) -> torch.Tensor | None:
    """(layers, B, T) bool real query tokens, or None when no layer has padding (the unpadded path)."""
    if all(o.query_mask is None for o in outputs):
        return None
    return torch.stack(
        [
            o.query_mask if o.query_mask is not None else o.cos.new_ones(o.cos.shape[:2], dtype=torch.bool)
            for o in outputs
        ]
    )


def _mean_over_layers_tokens(x: torch.Tensor, query: torch.Tensor | None) -> torch.Tensor:
    """(L, B, T, N) -> (B, N): mean over layers of the mean over (real) query tokens."""
    if query is None:
        return x.mean(dim=(0, 2))
    w = query.to(x.dtype)
    w = w / w.sum(-1, keepdim=True).clamp_min(1.0)
    return (x * w[..., None]).sum(2).mean(0)


def _mean_over_captions(per_caption: torch.Tensor, caption_mask: torch.Tensor) -> torch.Tensor:
    c = caption_mask.to(per_caption.dtype)
    return (per_caption * c).sum() / c.sum().clamp_min(1.0)


def sparsity_losses(
    outputs: list[CondOutput], text: TextInputs, form: str = "paper", margin: float = 0.1, topk: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (L_sparse, L_consistency) as scalars; zeros for ``none`` or without conditioned layers."""
    if form not in FORMS:
        raise ValueError(f"loss.sparse_form must be one of {', '.join(FORMS)}; got {form!r}")
    if not outputs or form == "none":
        zero = text.text.new_zeros(()) if outputs else torch.zeros(())
        return zero, zero
    valid = text.valid  # (B, N, S)
    v = valid.to(outputs[0].cos.dtype)[None, :, None]  # (1, B, 1, N, S)
    maps = link_maps(outputs, form, margin) * v  # (L, B, T, N, S)
    n_words = valid.sum(-1).clamp_min(1).to(maps.dtype)[None, :, None]  # (1, B, 1, N)

    def over_words(x: torch.Tensor) -> torch.Tensor:  # (L, B, T, N, S) -> (L, B, T, N)
        total = x.sum(-1)
        return total if form == "paper" else total / n_words

    if form == "entropy":
        attn = torch.stack([o.attn for o in outputs]) * valid.to(maps.dtype)[None, :, None, None]  # (L,B,H,T,N,S)
        # p log p with the log clamped: xlogy's gradient at p = 0 (padding, underflowed words) is -inf,
        # which times the zero mask gives NaN and poisons every weight in one step.
        per_token = -(attn * attn.clamp_min(1e-12).log()).sum(-1).mean(dim=2)  # (L, B, T, N)
    elif form == "topk":
        k = min(topk, maps.shape[-1])
        per_token = over_words(maps) - maps.topk(k, dim=-1).values.sum(-1) / n_words
    else:
        per_token = over_words(maps)
    query = _query_masks(outputs)
    sparse = _mean_over_captions(_mean_over_layers_tokens(per_token, query), text.caption_mask)
    deviation = over_words((maps - maps.mean(dim=0, keepdim=True)).abs())
    consistency = _mean_over_captions(_mean_over_layers_tokens(deviation, query), text.caption_mask)
    return sparse, consistency


@torch.no_grad()
def link_stats(outputs: list[CondOutput], text: TextInputs) -> dict[str, float]:
    """Per layer: fraction of positive patch-word cosines and mean attention entropy (nats), over real words
    and real query tokens."""
    stats: dict[str, float] = {}
    valid = text.valid  # (B, N, S)
    for i, o in enumerate(outputs):
        v = valid[:, None].expand_as(o.cos)  # (B, T, N, S)
        if o.query_mask is not None:
            v = v & o.query_mask[:, :, None, None]
        stats[f"pos_frac_l{i}"] = float((o.cos > 0)[v].float().mean()) if v.any() else 0.0
        attn = o.attn * valid[:, None, None].to(o.attn.dtype)
        ent = -torch.special.xlogy(attn, attn).sum(-1)  # (B, H, T, N)
        present = text.caption_mask[:, None, None].expand_as(ent)
        if o.query_mask is not None:
            present = present & o.query_mask[:, None, :, None]
        stats[f"attn_entropy_l{i}"] = float(ent[present].mean()) if present.any() else 0.0
    return stats
