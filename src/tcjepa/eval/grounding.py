"""Patch-word grounding of a TC-JEPA predictor, measured against exact object masks (``shapes`` or ``fashion-scenes``).

The map of a word is the patch-word cosine of the conditioner (Eq. 3: cos(W_Q q, W_K t) on the full
projected width) averaged over predictor layers, read with the whole image as context so every patch
has a query token. Figures show it rectified, as the paper's Fig. 5 does; the pointing game ranks the
unrectified mean, so the top patch stays defined even when every cosine is <= 0 (the dead zone).

Pointing game: for every colour, shape or garment word of a caption, a hit when the highest-scoring patch
covers at least ``min_cover`` of its pixels with one of the objects the word names. Chance is the
hit rate of a uniformly random patch, i.e. the mean share of qualifying patches per word.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data.captions import CaptionCache
from ..data.fashion_scenes_captions import CLASS_WORDS
from ..data.shapes import COLOURS, SHAPES, Grounding
from ..models.conditioning import TextInputs

MIN_COVER = 0.25


def token_row(caption: str, grounding: Grounding, tokens: Sequence[str]) -> int | None:
    """Row of ``grounding.word`` in the encoder's token rows of ``caption`` (None when truncated away).

    Word pieces (``sand``, ``##al``) are joined back into words first, and a word split into pieces is
    read at its first piece; so the k-th occurrence of the word among the caption's words is its k-th
    occurrence among the joined tokens.
    """
    words = [w.strip(".,").lower() for w in caption.split(" ")]
    k = sum(1 for w in words[: grounding.word_index] if w == grounding.word)
    starts: list[tuple[int, str]] = []  # (row of the word's first piece, the joined word)
    for i, tok in enumerate(tokens):
        if tok.startswith("##") and starts:
            starts[-1] = (starts[-1][0], starts[-1][1] + tok[2:])
        else:
            starts.append((i, tok))
    hits = [row for row, word in starts if word.lower() == grounding.word]
    return hits[k] if k < len(hits) else None


@torch.no_grad()
def patch_word_cosines(
    method: torch.nn.Module, images: torch.Tensor, text: TextInputs, centred: bool | None = None
) -> torch.Tensor:
    """(B, P, N, S) layer-mean patch-word cosines with every one of the P patches as context.

    ``centred``: None reads the similarity the run was trained with; True/False force the cosine against
    caption-centred keys (a word's pull relative to the caption's average word, the only part of a
    token's logits the softmax sees) or against the raw keys (Eq. 3).
    """
    if not getattr(method.predictor, "has_word_links", False):
        raise ValueError(
            "this method's predictor exposes no patch-word links (model.predictor.conditioning="
            f"{getattr(method.predictor, 'conditioning', 'none')}); grounding needs a TC-JEPA run with words"
        )
    conds = [c for c in method.predictor.conditioners if c.word_links]
    saved = [c.centred_links for c in conds]
    b = images.shape[0]
    p = method.context_encoder.spec.num_patches
    ctx = torch.arange(p, device=images.device).expand(b, p)
    z = method.context_encoder(images)
    dummy_target = torch.zeros(b, 1, 1, dtype=torch.long, device=images.device)
    try:
        for c in conds:
            c.centred_links = c.centred_links if centred is None else centred
        _, outputs = method.predictor(z, ctx, dummy_target, text)
    finally:
        for c, flag in zip(conds, saved):
            c.centred_links = flag
    # The query axis of one copy is (prepended tokens, the P context patches, the dummy target).
    return torch.stack([o.cos[:, o.prefix : o.prefix + p] for o in outputs]).mean(dim=0).float()


@dataclass
class WordQuery:
    """One grounded word: image ``image``, caption ``caption`` (index into that image's captions)."""

    image: int
    caption: int
    row: int
    word: str
    slots: tuple[int, ...]

    @property
    def kind(self) -> str:
        if self.word in COLOURS:
            return "colour"
        return "shape" if self.word in SHAPES else "garment" if self.word in CLASS_WORDS else "other"


def word_queries(
    captions: list[list[str]], groundings: list[list[tuple[Grounding, ...]]], tokens_of
) -> list[WordQuery]:
    """Every colour/shape word of every caption, with its token row; ``tokens_of(sentence)`` lists tokens."""
    out = []
    for b, (caps, grounds) in enumerate(zip(captions, groundings)):
        for j, (cap, gs) in enumerate(zip(caps, grounds)):
            tokens = tokens_of(cap)
            for g in gs:
                row = token_row(cap, g, tokens)
                if row is not None:
                    out.append(WordQuery(b, j, row, g.word, tuple(g.slots)))
    return out


def patch_cover(instance: torch.Tensor, patch_size: int, num_slots: int = 4) -> torch.Tensor:
    """(B, P, num_slots) share of each patch's pixels that belong to each object slot."""
    onehot = F.one_hot(instance.long(), num_slots + 1)[..., 1:].permute(0, 3, 1, 2).float()  # (B, K, H, W)
    cover = F.avg_pool2d(onehot, patch_size)  # (B, K, g, g)
    return cover.flatten(2).transpose(1, 2)


@dataclass
class PointingResult:
    accuracy: float
    chance: float
    count: int
    by_kind: dict[str, tuple[float, float, int]]  # kind -> (accuracy, chance, count)
    # The same game played with the caption's mean map over its words for every word: a map that only
    # finds salient objects scores as well here as per word; word-specific grounding scores above it.
    agnostic: float = float("nan")

    def as_metrics(self, prefix: str = "grounding") -> dict[str, float]:
        out = {
            f"{prefix}/pointing": self.accuracy,
            f"{prefix}/pointing_chance": self.chance,
            f"{prefix}/words": float(self.count),
        }
        if not math.isnan(self.agnostic):
            out[f"{prefix}/pointing_agnostic"] = self.agnostic
        for kind, (acc, chance, _count) in self.by_kind.items():
            out[f"{prefix}/pointing_{kind}"] = acc
            out[f"{prefix}/pointing_{kind}_chance"] = chance
        return out


def score_words(
    cos: torch.Tensor, queries: list[WordQuery], cover: torch.Tensor, min_cover: float = MIN_COVER
) -> list[tuple[str, float, float]]:
    """Per word (kind, hit, chance); ``cos`` (B, P, N, S) maps, ``cover`` (B, P, slots) from :func:`patch_cover`."""
    out = []
    for q in queries:
        ok = cover[q.image][:, list(q.slots)].amax(dim=1) >= min_cover  # (P,) patches on a named object
        if not ok.any():
            continue  # the object is too small to fill min_cover of any patch: no fair answer exists
        top = int(cos[q.image, :, q.caption, q.row].argmax())
        out.append((q.kind, float(ok[top]), float(ok.float().mean())))
    return out


def summarise(scores: list[tuple[str, float, float]]) -> PointingResult:
    if not scores:
        return PointingResult(float("nan"), float("nan"), 0, {})

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs)

    by_kind = {}
    for kind in sorted({k for k, _, _ in scores}):
        rows = [(h, c) for k, h, c in scores if k == kind]
        by_kind[kind] = (mean([h for h, _ in rows]), mean([c for _, c in rows]), len(rows))
    return PointingResult(mean([h for _, h, _ in scores]), mean([c for _, _, c in scores]), len(scores), by_kind)


def pointing_game(
    cos: torch.Tensor, queries: list[WordQuery], cover: torch.Tensor, min_cover: float = MIN_COVER
) -> PointingResult:
    return summarise(score_words(cos, queries, cover, min_cover))


def caption_mean_maps(cos: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, P, N, S) maps -> the same shape, each word's map replaced by its caption's mean over real words
    (``valid`` (B, N, S)): the word-agnostic control of the pointing game."""
    w = valid[:, None].to(cos.dtype)
    mean = torch.where(w.bool(), cos, 0.0).sum(-1, keepdim=True) / w.sum(-1, keepdim=True).clamp_min(1.0)
    return mean.expand_as(cos)


@torch.no_grad()
def evaluate_grounding(
    method: torch.nn.Module,
    dataset,
    cache: CaptionCache,
    n: int = 256,
    num_captions: int = 8,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    min_cover: float = MIN_COVER,
    centred: bool | None = None,
) -> PointingResult:
    """Pointing game over the first ``n`` scenes of a ``shapes`` or ``fashion-scenes`` split, with each scene's
    first captions (``centred``: which similarity to read, see :func:`patch_word_cosines`)."""
    was_training = method.training
    method.eval()
    patch = method.context_encoder.spec.patch_size
    scores: list[tuple[str, float, float]] = []
    agnostic: list[tuple[str, float, float]] = []
    try:
        for start in range(0, min(n, len(dataset)), batch_size):
            idx = range(start, min(start + batch_size, n, len(dataset)))
            items = [dataset[i] for i in idx]
            scenes = [dataset.scene(i) for i in idx]
            captions = [list(s.captions[:num_captions]) for s in scenes]
            groundings = [list(s.groundings[:num_captions]) for s in scenes]
            text = TextInputs.from_batch({k: v.to(device) for k, v in cache.batch(captions, num_captions).items()})
            images = torch.stack([it["image"] for it in items]).to(device)
            cos = patch_word_cosines(method, images, text, centred)
            cover = patch_cover(torch.stack([it["labels"]["instance"] for it in items]).to(device), patch)
            queries = word_queries(captions, groundings, cache.encoder.tokens)
            scores += score_words(cos, queries, cover, min_cover)
            agnostic += score_words(caption_mean_maps(cos, text.valid), queries, cover, min_cover)
    finally:
        method.train(was_training)
    result = summarise(scores)
    if agnostic:
        result.agnostic = summarise(agnostic).accuracy
    return result
