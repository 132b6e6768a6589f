"""Analytic FLOPs of one training step per image, term by term, for I-JEPA and TC-JEPA.

Counted: matrix products (2*m*n*k), including convolutions and attention, which is exactly what
``torch.utils.flop_counter.FlopCounterMode`` counts (tests cross-check the two). Element-wise work
(norms, softmax, GELU, the optimizer) is left out, as is customary. Backward costs one product per
operand that needs a gradient: weight gradients always, input gradients unless the input is data
(images, frozen text states) — so the patch embedding and the text key/value projections cost 2x
their forward, everything else 3x. The EMA target encoder runs forward only.

The numbers are reported, never tuned: docs/design.md §4.9 asks for the true overhead of the conditioner as
we implement it, beside the paper's +1.79% for ViT-B/16.
"""

from __future__ import annotations

from dataclasses import dataclass

from .models.vit import ViTSpec


@dataclass(frozen=True)
class Shapes:
    """Everything the count depends on (per image)."""

    num_patches: int  # N = (image/patch)^2
    patch_dim: int  # 3 * patch^2
    enc_dim: int
    enc_depth: int
    enc_mlp: float
    pred_dim: int
    pred_depth: int
    pred_mlp: float
    context: float  # tokens in the context (Kc)
    target: float  # tokens per target block (Kt)
    num_targets: int  # M
    captions: int = 0  # N captions (0: no conditioning)
    words: int = 0  # S words per caption after padding
    # Real words per caption slot (mean over the batch; absent captions count 0): the words conditioner
    # projects only these into keys and values (eager mode). None: every slot, an upper bound.
    real_words: float | None = None
    text_dim: int = 0
    cond_layers: int | None = None  # predictor blocks with a conditioner (None: every block)
    conditioning: str = "words"  # model.predictor.conditioning
    fusion: str = "max"  # model.predictor.caption_fusion

    @classmethod
    def of(cls, spec: ViTSpec, pred_dim: int, pred_depth: int, **tokens: float) -> Shapes:
        """The shapes of an encoder ``spec`` with a ``pred_dim`` x ``pred_depth`` predictor; ``tokens`` gives
        context, target, num_targets and, for text conditioning, captions, words and text_dim."""
        return cls(
            num_patches=spec.num_patches,
            patch_dim=3 * spec.patch_size**2,
            enc_dim=spec.embed_dim,
            enc_depth=spec.depth,
            enc_mlp=spec.mlp_ratio,
            pred_dim=pred_dim,
            pred_depth=pred_depth,
            pred_mlp=spec.mlp_ratio,
            **tokens,
        )


def _block(tokens: float, dim: int, mlp: float) -> float:
    """One transformer block's forward matmul FLOPs on a sequence of ``tokens``."""
    linear = 2 * tokens * dim * dim * (3 + 1 + 2 * mlp)  # qkv, proj, fc1+fc2
    attention = 2 * 2 * tokens * tokens * dim  # q k^T and attn v
    return linear + attention


def encoder_forward(s: Shapes, tokens: float) -> dict[str, float]:
    return {
        "patch_embed": 2 * s.num_patches * s.patch_dim * s.enc_dim,
        "blocks": s.enc_depth * _block(tokens, s.enc_dim, s.enc_mlp),
    }


def predictor_forward(s: Shapes) -> dict[str, float]:
    seq = s.context + s.target
    return {
        "embed": 2 * s.context * s.enc_dim * s.pred_dim,
        "blocks": s.pred_depth * s.num_targets * _block(seq, s.pred_dim, s.pred_mlp),
        "out": 2 * s.num_targets * s.target * s.pred_dim * s.enc_dim,
    }


def conditioner_forward(s: Shapes) -> dict[str, float]:
    """The text conditioner's matrix products per image, by term; T query tokens = M copies of
    (context + target). Terms computed from frozen text only (``DATA_FED``) need no input gradient."""
    if not s.captions or s.conditioning == "none":
        return {}
    t = s.num_targets * (s.context + s.target)
    d, n, dt = s.pred_dim, s.captions, s.text_dim
    layers = s.pred_depth if s.cond_layers is None else s.cond_layers
    if s.conditioning == "input":  # one projection of the pooled captions, added at the input
        return {"input": 2 * dt * d}
    if s.conditioning == "sequence":  # the words' projection, then every block on the longer sequence
        seq, extra = s.context + s.target, n * s.words
        longer = _block(seq + extra, d, s.pred_mlp) - _block(seq, d, s.pred_mlp)
        return {"tokens": 2 * n * s.words * dt * d, "sequence": s.pred_depth * s.num_targets * longer}
    if s.conditioning == "adaln":  # scale and shift for both norms, once per image and block
        return {"modulation": layers * 2 * dt * 4 * d}
    w = 1 if s.conditioning == "caption" else s.words  # caption: one key and value per caption
    projected = s.real_words if s.conditioning == "words" and s.real_words is not None else w
    per_layer = {
        "query": 2 * t * d * d,
        "key_value": 2 * 2 * n * projected * dt * d,
        "scores": 2 * t * n * w * d,  # per-head q.k; their sum over heads is the full-width cosine, free
        "weighted_sum": 2 * t * n * w * d,  # softmax(qK_n) V_n for every caption
        "out_proj": 2 * t * d * d,  # once, after the fusion over captions
    }
    if s.conditioning == "words" and s.fusion == "attention":
        per_layer["fusion"] = 2 * 2 * t * n * d  # the query's score of each caption's update, and their sum
    return {k: v * layers for k, v in per_layer.items()}


# Products whose input is frozen text (or pooled from it): backward computes the weight gradient only.
DATA_FED = frozenset({"key_value", "modulation", "input", "tokens"})


def training_step(s: Shapes) -> dict[str, float]:
    """Per-image training FLOPs by part; the ``*_fwd`` entries are forward-only counts."""
    ctx = encoder_forward(s, s.context)
    tgt = encoder_forward(s, s.num_patches)
    pred = predictor_forward(s)
    cond = {k: v * (2 if k in DATA_FED else 3) for k, v in conditioner_forward(s).items()}
    parts = {
        "context_encoder": ctx["patch_embed"] * 2 + ctx["blocks"] * 3,
        "target_encoder": sum(tgt.values()),
        "predictor": sum(pred.values()) * 3,
        "conditioner": sum(cond.values()),
    }
    parts["total"] = sum(parts.values())
    parts["conditioner_fwd"] = sum(conditioner_forward(s).values())
    for k, v in cond.items():
        parts[f"conditioner.{k}"] = v
    return parts


def text_encoder_forward(captions: int, tokens: int, dim: int = 384, depth: int = 6, mlp: float = 4.0) -> float:
    """A frozen BERT-style text encoder run on the fly over ``captions`` x ``tokens`` (MiniLM-L6 defaults)."""
    return captions * depth * _block(tokens, dim, mlp)
