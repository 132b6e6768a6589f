"""Captions and word groundings for `fashion-scenes`: each item's garment class, position and relations.

The garment words are the very semantics the Fashion-MNIST probe measures, so on this testbed the captions
carry what the encoder is graded on (on `shapes` they mostly carry colour). Sentences come from a few
templates over discrete facts (3x3 positions, number words, left/right/above/below), as for `shapes`, so the
number of distinct sentences stays bounded and the frozen text encoder's cache stays small. Every garment
word is one word the pointing game can score: it carries the item slots it names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from tcjepa.data.shapes_captions import (
    NUMBERS,
    POSITION_PHRASES,
    RELATION_PHRASES,
    Caption,
    article,
    fill_captions,
    relation_index,
    relation_is_clear,
    sentence,
)

# Label k of Fashion-MNIST is named by CLASS_WORDS[k] in captions: one word each, never a position word
# ("top" would collide with "in the top left"), so a grounded word always names a garment.
CLASS_WORDS: tuple[str, ...] = (
    "tee",
    "trousers",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "boot",
)
# The words before the grounded one, where the class needs more ("an ankle boot", "a pair of trousers").
_CLASS_PREFIX: tuple[str, ...] = ("", "pair of", "", "", "", "", "", "", "", "ankle")
CAPTIONS_PER_SCENE = 8  # fixed, so batches of caption lists stay rectangular

_CLEAR_MIN_GAP = 0.15  # a relation is put into words only when the centres are this far apart (image units)
_SUPERLATIVE_RATIO = 1.3  # "the largest item" only when it beats every other by this visible-area ratio


class Placed(Protocol):
    label: int
    cx: float
    cy: float
    x_bin: int
    y_bin: int


def build_captions(
    items: Sequence[Placed],
    visible_area: Sequence[int],
    rng: np.random.Generator,
    n_captions: int = CAPTIONS_PER_SCENE,
) -> tuple[Caption, ...]:
    """``n_captions`` distinct captions for items in slot order (largest visible first; classes distinct).

    A core set always appears (count, a summary naming every item, one sentence per item with its
    position, a relation and a superlative where one can be stated without ambiguity); extras in random
    order fill the rest.
    """
    n = len(items)

    def ref(k: int) -> list:
        prefix = _CLASS_PREFIX[items[k].label]
        return [prefix, (CLASS_WORDS[items[k].label], (k,))] if prefix else [(CLASS_WORDS[items[k].label], (k,))]

    def an(k: int) -> str:
        return article(_CLASS_PREFIX[items[k].label] or CLASS_WORDS[items[k].label])

    def where(k: int) -> str:
        return POSITION_PHRASES[(items[k].y_bin, items[k].x_bin)]

    core: list[Caption] = []
    extra: list[Caption] = []
    core.append(
        sentence("count", "there is one item of clothing" if n == 1 else f"there are {NUMBERS[n]} items of clothing")
    )
    listed = sorted(range(n), key=lambda k: items[k].label)  # canonical order: one sentence per class set
    parts: list = []
    for i, k in enumerate(listed):
        if i:
            parts.append("and" if i == n - 1 else ",")
        parts += [an(k), *ref(k)]
    core.append(sentence("summary", *parts))
    if n == 1:
        extra.append(sentence("summary", "the only item is", an(0), *ref(0)))
    for k in range(n):
        core.append(sentence("object", an(k), *ref(k), where(k)))
        extra.append(sentence("position", "the", *ref(k), "is", where(k)))
        extra.append(sentence("exists", "there is", an(k), *ref(k)))
        extra.append(sentence("picture", "a picture of", an(k), *ref(k)))
        if sum((p.x_bin, p.y_bin) == (items[k].x_bin, items[k].y_bin) for p in items) == 1:
            extra.append(sentence("location", "the item", where(k), "is", an(k), *ref(k)))

    relations = [
        sentence("relation", "the", *ref(a), "is", RELATION_PHRASES[relation_index(items[a], items[b])], "the", *ref(b))
        for a in range(n)
        for b in range(n)
        if a != b and relation_is_clear(items[a], items[b], _CLEAR_MIN_GAP)
    ]
    if relations:
        pick = int(rng.integers(len(relations)))
        core.append(relations[pick])
        extra.extend(relations[:pick] + relations[pick + 1 :])
    if n > 1 and visible_area[0] >= _SUPERLATIVE_RATIO * max(visible_area[1:]):
        core.append(sentence("superlative", "the largest item is", an(0), *ref(0)))

    return fill_captions(core, extra, n_captions, rng, f"a {n}-item scene")
