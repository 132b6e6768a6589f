"""Captions and word groundings for the `shapes` dataset.

Sentences come from a small set of templates over coarse, discrete facts (3x3 grid positions, size
classes, number words up to four, a canonical order in summaries). That keeps the number of distinct
sentences over the whole dataset bounded, which matters because a frozen text encoder is cached per
sentence. Each colour or shape word carries the object slots it can refer to, for the pointing game.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from tcjepa.data.shapes_render import COLOURS, SHAPES, ShapeObject

RELATIONS: tuple[str, ...] = ("left", "right", "above", "below")
CAPTIONS_PER_SCENE = 12  # fixed so torch's default collate can batch the caption lists

RELATION_PHRASES = ("left of", "right of", "above", "below")
NUMBERS = ("zero", "one", "two", "three", "four")
# (y_bin, x_bin) -> phrase; coarse on purpose (see module docstring)
POSITION_PHRASES = {
    (0, 0): "in the top left",
    (0, 1): "at the top",
    (0, 2): "in the top right",
    (1, 0): "on the left",
    (1, 1): "in the centre",
    (1, 2): "on the right",
    (2, 0): "in the bottom left",
    (2, 1): "at the bottom",
    (2, 2): "in the bottom right",
}
BACKGROUND_ADJECTIVES: dict[str, str] = {
    "plain": "plain",
    "noise": "noisy",
    "stripes": "striped",
    "checker": "checkered",
    "gradient": "gradient",
}
_BACKGROUND_SENTENCES = {**BACKGROUND_ADJECTIVES, "gradient": "a gradient"}

# A relation is only put into words when one axis clearly dominates and the gap is visible.
_CLEAR_RATIO = 1.5
_CLEAR_MIN_GAP = 0.12
# A superlative is only stated when the extreme object beats every other one by this area ratio.
_SUPERLATIVE_RATIO = 1.2


class Grounding(NamedTuple):
    """A colour or shape word in a caption and the object slots it can refer to.

    `word_index` indexes `caption.split(" ")`; the word found there may carry trailing punctuation,
    `word` is the bare name (an entry of COLOURS or SHAPES).
    """

    word_index: int
    word: str
    slots: tuple[int, ...]


class Caption(NamedTuple):
    text: str
    groundings: tuple[Grounding, ...]
    kind: str


_Part = str | tuple[str, tuple[int, ...]]


def sentence(kind: str, *parts: _Part) -> Caption:
    """Join parts into a lowercase sentence ending with a period; (word, slots) parts become groundings.

    A part "," is glued to the previous word so word indices stay aligned with `split(" ")`.
    """
    words: list[str] = []
    groundings: list[Grounding] = []
    for part in parts:
        if isinstance(part, tuple):
            word, slots = part
            groundings.append(Grounding(len(words), word, tuple(slots)))
            words.append(word)
        elif part == ",":
            words[-1] += ","
        else:
            words.extend(part.split())
    return Caption(" ".join(words) + ".", tuple(groundings), kind)


def article(word: str) -> str:
    """The indefinite article for `word` ("an orange", "a red")."""
    return "an" if word[0] in "aeiou" else "a"


def relation_index(a: ShapeObject, b: ShapeObject) -> int:
    """Index into RELATIONS of `a` relative to `b`, along the dominant axis of their centre difference."""
    dx, dy = a.cx - b.cx, a.cy - b.cy
    if abs(dx) >= abs(dy):
        return 0 if dx < 0 else 1
    return 2 if dy < 0 else 3  # y grows downwards


def relation_is_clear(a: ShapeObject, b: ShapeObject, min_gap: float = _CLEAR_MIN_GAP) -> bool:
    """Whether one axis clearly dominates the centres' difference and the gap (image units) is >= min_gap."""
    major, minor = sorted((abs(a.cx - b.cx), abs(a.cy - b.cy)), reverse=True)
    return major >= min_gap and major >= _CLEAR_RATIO * minor


def build_captions(
    objects: Sequence[ShapeObject],
    background: str,
    rng: np.random.Generator,
    n_captions: int = CAPTIONS_PER_SCENE,
) -> tuple[Caption, ...]:
    """`n_captions` distinct captions for objects given in slot order (largest visible area first).

    A core set always appears (count, background, summary, one sentence per object, colour-only,
    shape-only, and a relation and a superlative when one can be stated unambiguously); the rest are
    drawn at random from extra phrasings so single-object scenes still get enough distinct sentences.
    Assumes (colour, shape) pairs are unique within a scene, so "the red circle" always refers to one slot.
    """
    n = len(objects)
    slots_by_colour: dict[str, tuple[int, ...]] = {}
    slots_by_shape: dict[str, tuple[int, ...]] = {}
    for k, o in enumerate(objects):
        slots_by_colour[o.colour] = (*slots_by_colour.get(o.colour, ()), k)
        slots_by_shape[o.shape] = (*slots_by_shape.get(o.shape, ()), k)
    colours = sorted(slots_by_colour, key=COLOURS.index)
    shapes = sorted(slots_by_shape, key=SHAPES.index)

    def ref(k: int) -> list[_Part]:  # "red circle", both words grounded on slot k
        return [(objects[k].colour, (k,)), (objects[k].shape, (k,))]

    def an(k: int) -> str:  # article before "<colour> <shape>"
        return article(objects[k].colour)

    def where(k: int) -> str:
        return POSITION_PHRASES[(objects[k].y_bin, objects[k].x_bin)]

    core: list[Caption] = []
    extra: list[Caption] = []
    bg_adj = BACKGROUND_ADJECTIVES[background]

    # count, background, summary
    core.append(sentence("count", "there is one shape" if n == 1 else f"there are {NUMBERS[n]} shapes"))
    core.append(sentence("background", f"the background is {_BACKGROUND_SENTENCES[background]}"))
    canonical = lambda k: (SHAPES.index(objects[k].shape), COLOURS.index(objects[k].colour))
    named = sorted(range(min(n, 2)), key=canonical)
    if n == 1:
        core.append(sentence("summary", an(0), *ref(0)))
        extra.append(sentence("summary", "the only shape is", an(0), *ref(0)))
    elif n == 2:
        core.append(sentence("summary", an(named[0]), *ref(named[0]), "and", an(named[1]), *ref(named[1])))
    else:
        rest = "one other shape" if n == 3 else f"{NUMBERS[n - 2]} other shapes"
        p, q = named
        core.append(sentence("summary", an(p), *ref(p), ",", an(q), *ref(q), f"and {rest}"))

    # one sentence per object, plus rephrasings of the same facts
    for k, o in enumerate(objects):
        core.append(sentence("object", "a", o.size, *ref(k), where(k)))
        extra.append(sentence("position", "the", *ref(k), "is", where(k)))
        extra.append(sentence("attributes", "a", o.size, *ref(k)))
        extra.append(sentence("on_background", an(k), *ref(k), f"on a {bg_adj} background"))
        if len(slots_by_shape[o.shape]) == 1:
            extra.append(sentence("shape_colour", "the", (o.shape, (k,)), "is", (o.colour, (k,))))
        if len(slots_by_colour[o.colour]) == 1:
            extra.append(sentence("colour_shape", "the", (o.colour, (k,)), "shape is a", (o.shape, (k,))))
        if sum((p.x_bin, p.y_bin) == (o.x_bin, o.y_bin) for p in objects) == 1:
            extra.append(sentence("location", "the shape", where(k), "is", an(k), *ref(k)))

    # colour-only and shape-only: one of each in the core, the others as extras
    colour_caps = [sentence("colour", "there is something", (c, slots_by_colour[c])) for c in colours]
    shape_caps = [sentence("shape", "there is a", (s, slots_by_shape[s])) for s in shapes]
    for caps in (colour_caps, shape_caps):
        pick = int(rng.integers(len(caps)))
        core.append(caps[pick])
        extra.extend(caps[:pick] + caps[pick + 1 :])
    for c in colours:
        if len(slots_by_colour[c]) > 1:
            number = NUMBERS[len(slots_by_colour[c])]
            extra.append(sentence("colour_count", f"there are {number}", (c, slots_by_colour[c]), "shapes"))

    # relations and superlatives, only when unambiguous
    relations = [
        sentence(
            "relation",
            "the",
            *ref(a),
            "is",
            RELATION_PHRASES[relation_index(objects[a], objects[b])],
            "the",
            *ref(b),
        )
        for a in range(n)
        for b in range(n)
        if a != b and relation_is_clear(objects[a], objects[b])
    ]
    superlatives = []
    if n > 1:
        areas = [o.area for o in objects]
        big, small = int(np.argmax(areas)), int(np.argmin(areas))
        others_big = max(a for k, a in enumerate(areas) if k != big)
        others_small = min(a for k, a in enumerate(areas) if k != small)
        # slot 0 / last slot are the largest / smallest visible, so the words hold for what is seen too
        if big == 0 and areas[big] >= _SUPERLATIVE_RATIO * others_big:
            superlatives.append(sentence("superlative", "the largest shape is", an(big), *ref(big)))
        if small == n - 1 and others_small >= _SUPERLATIVE_RATIO * areas[small]:
            superlatives.append(sentence("superlative", "the smallest shape is", an(small), *ref(small)))
    for caps in (relations, superlatives):
        if caps:
            pick = int(rng.integers(len(caps)))
            core.append(caps[pick])
            extra.extend(caps[:pick] + caps[pick + 1 :])

    return fill_captions(core, extra, n_captions, rng, f"a {n}-object scene")


def fill_captions(
    core: list[Caption], extra: list[Caption], n_captions: int, rng: np.random.Generator, what: str
) -> tuple[Caption, ...]:
    """The first ``n_captions`` of ``core``, topped up with ``extra`` in random order, skipping repeats."""
    chosen = list(core[:n_captions])
    seen = {c.text for c in chosen}
    for i in rng.permutation(len(extra)):
        if len(chosen) == n_captions:
            break
        if extra[i].text not in seen:
            chosen.append(extra[i])
            seen.add(extra[i].text)
    if len(chosen) < n_captions or len(seen) < n_captions:
        raise RuntimeError(f"only {len(seen)} distinct captions for {what}; need {n_captions}")
    return tuple(chosen)
