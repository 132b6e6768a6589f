"""Drawing for the `shapes` dataset: what can be drawn, object geometry, masks and backgrounds.

Objects are rasterised once with PIL, without anti-aliasing, into an instance map; the RGB image is
then painted *from* that map. Pixels, instance map and the per-pixel label maps therefore agree
exactly by construction, which the dense probes and the pointing game rely on.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

# Every name is a single WordPiece token in the BERT uncased vocabulary, so a word maps to one token.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
COLOURS: tuple[str, ...] = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "white")
SIZES: tuple[str, ...] = ("small", "medium", "large")
BACKGROUNDS: tuple[str, ...] = ("plain", "noise", "stripes", "checker", "gradient")

# Saturated, well separated colours; backgrounds stay muted and mid-grey so these remain identifiable.
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 40),
    "green": (40, 170, 70),
    "blue": (40, 90, 225),
    "purple": (140, 60, 200),
    "pink": (250, 130, 190),
    "white": (245, 245, 245),
}
COLOUR_JITTER = 14  # max per-channel offset, small enough never to cross into a neighbouring colour

# Unoccluded area as a fraction of the image. Classes are separated by gaps (>= 1.27x) so the size word
# is never ambiguous, and jitter inside a class keeps areas continuous.
SIZE_AREA: dict[str, tuple[float, float]] = {
    "small": (0.016, 0.026),
    "medium": (0.035, 0.055),
    "large": (0.07, 0.10),
}

_CIRCLE_VERTICES = 48  # polygon circle: deviation < 0.1 px even at 224 px


def _polygon_area(pts: np.ndarray) -> float:
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _unit_polygon(shape: str) -> np.ndarray:
    """Vertices of `shape` centred at 0 and scaled to area 1, so an object's area is set by one number."""
    if shape == "circle":
        t = np.arange(_CIRCLE_VERTICES) * (2 * math.pi / _CIRCLE_VERTICES)
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    elif shape == "square":
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float)
    elif shape == "triangle":  # equilateral, apex up (y grows downwards), centred on its centroid
        t = -math.pi / 2 + np.arange(3) * (2 * math.pi / 3)
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    elif shape == "star":  # five points; a fat inner radius keeps it recognisable at 32 px
        t = -math.pi / 2 + np.arange(10) * (math.pi / 5)
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.5)
        pts = np.stack([r * np.cos(t), r * np.sin(t)], 1)
    elif shape == "cross":  # plus sign, arm width one third of its span
        a = 1 / 3
        pts = np.array(
            [
                [-a, -1],
                [a, -1],
                [a, -a],
                [1, -a],
                [1, a],
                [a, a],
                [a, 1],
                [-a, 1],
                [-a, a],
                [-1, a],
                [-1, -a],
                [-a, -a],
            ],
            dtype=float,
        )
    else:
        raise ValueError(f"shape={shape!r} is not drawable; expected one of {SHAPES}")
    return pts / math.sqrt(_polygon_area(pts))


UNIT_POLYGONS: dict[str, np.ndarray] = {s: _unit_polygon(s) for s in SHAPES}
UNIT_RADIUS: dict[str, float] = {s: float(np.linalg.norm(p, axis=1).max()) for s, p in UNIT_POLYGONS.items()}


BIN_DEAD_ZONE = 0.035  # centres keep this far from 3x3 grid lines, so position words are never borderline


def grid_bin(v: float) -> int:
    """The 3x3 grid cell (0..2) of a centre coordinate in [0, 1]: what position words name."""
    return min(int(v * 3), 2)


def off_grid_coordinate(rng: np.random.Generator, margin: float) -> float:
    """A centre coordinate in [margin, 1 - margin] at least BIN_DEAD_ZONE away from the 3x3 grid lines."""
    while True:  # the dead zones cover < 25% of the range, so this ends quickly
        v = float(rng.uniform(margin, 1.0 - margin))
        if abs(v - 1 / 3) >= BIN_DEAD_ZONE and abs(v - 2 / 3) >= BIN_DEAD_ZONE:
            return v


class GridPosition:
    """The 3x3 grid cell of an object's centre (``cx``, ``cy`` in image units, y down): what position words name."""

    cx: float
    cy: float

    @property
    def x_bin(self) -> int:
        """Column of the 3x3 grid cell holding the centre (0 left .. 2 right)."""
        return grid_bin(self.cx)

    @property
    def y_bin(self) -> int:
        """Row of the 3x3 grid cell holding the centre (0 top .. 2 bottom)."""
        return grid_bin(self.cy)


def slot_order(objects: Sequence[GridPosition], visible: Sequence[int]) -> list[int]:
    """Painting indices in slot order: the largest visible area first, ties by position (top, then left).

    Slot 0 is "the largest object" the probes and captions ask about, in ``shapes`` and ``fashion-scenes``.
    """
    return sorted(range(len(objects)), key=lambda i: (-visible[i], objects[i].cy, objects[i].cx))


@dataclass(frozen=True)
class ShapeObject(GridPosition):
    """One object's attributes and geometry, in resolution-free units (image spans [0, 1]^2, y down)."""

    shape: str
    colour: str
    size: str
    area: float  # unoccluded area as a fraction of the image
    cx: float
    cy: float
    rotation: float  # radians
    rgb: tuple[int, int, int]
    depth: int  # painting order: 0 is drawn first (furthest back)

    @property
    def radius(self) -> float:
        """Circumradius in image units: a rotation-independent bound on the object's extent."""
        return UNIT_RADIUS[self.shape] * math.sqrt(self.area)

    def vertices(self, image_size: int) -> np.ndarray:
        """Polygon vertices in pixel coordinates (pixel centres at integers)."""
        c, s = math.cos(self.rotation), math.sin(self.rotation)
        rot = np.array([[c, s], [-s, c]])
        pts = UNIT_POLYGONS[self.shape] @ rot * math.sqrt(self.area)
        return (pts + (self.cx, self.cy)) * image_size - 0.5


def rasterise(obj: ShapeObject, image_size: int) -> tuple[np.ndarray, int, int]:
    """Unoccluded mask of `obj` on a local canvas, plus the canvas's top-left pixel in the frame.

    A local canvas (rather than the frame) keeps the whole object, so the full area is known even when
    the object is partly outside the image, and it is cheaper than drawing a full frame per object.
    """
    pts = obj.vertices(image_size)
    x0, y0 = (math.floor(v) - 1 for v in pts.min(0))
    x1, y1 = (math.ceil(v) + 2 for v in pts.max(0))
    canvas = Image.new("L", (x1 - x0, y1 - y0), 0)
    ImageDraw.Draw(canvas).polygon([(float(x - x0), float(y - y0)) for x, y in pts], fill=1)
    return np.asarray(canvas, dtype=bool), x0, y0


def clip_to_frame(mask: np.ndarray, x0: int, y0: int, image_size: int) -> tuple[np.ndarray, tuple[slice, slice]]:
    """The part of a local mask inside the frame, and the frame slices it lands on."""
    h, w = mask.shape
    fx0, fy0 = max(x0, 0), max(y0, 0)
    fx1, fy1 = min(x0 + w, image_size), min(y0 + h, image_size)
    if fx1 <= fx0 or fy1 <= fy0:
        return np.zeros((0, 0), bool), (slice(0, 0), slice(0, 0))
    return mask[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0], (slice(fy0, fy1), slice(fx0, fx1))


def instance_map(objects: tuple[ShapeObject, ...] | list[ShapeObject], image_size: int) -> np.ndarray:
    """(H, W) int64 map: 0 background, i+1 where objects[i] is the top-most object.

    Objects are painted in `depth` order; ids follow list position, so passing objects in slot order
    gives slot ids directly.
    """
    inst = np.zeros((image_size, image_size), dtype=np.int64)
    for i in sorted(range(len(objects)), key=lambda j: objects[j].depth):
        mask, x0, y0 = rasterise(objects[i], image_size)
        clipped, where = clip_to_frame(mask, x0, y0, image_size)
        inst[where][clipped] = i + 1
    return inst


@dataclass(frozen=True)
class Background:
    """A textured, muted background; everything needed to redraw it at any resolution."""

    kind: str
    colour0: tuple[int, int, int]
    colour1: tuple[int, int, int]
    angle: float  # radians, for stripes and gradients
    period: float  # stripe period / checker cell, in image units
    phase: float  # offset of the pattern, in periods
    noise_seed: int


def _muted(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return round(r * 255), round(g * 255), round(b * 255)


def sample_background(rng: np.random.Generator) -> Background:
    """Low-saturation, mid-value colours: never mistakable for an object colour (incl. white)."""
    kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    hue, sat, val = rng.uniform(0, 1), rng.uniform(0.0, 0.25), rng.uniform(0.3, 0.6)
    contrast = rng.uniform(0.08, 0.18) * rng.choice([-1.0, 1.0])
    colour0 = _muted(hue, sat, val)
    colour1 = _muted((hue + rng.uniform(-0.08, 0.08)) % 1.0, sat, float(np.clip(val + contrast, 0.2, 0.7)))
    return Background(
        kind=kind,
        colour0=colour0,
        colour1=colour1,
        angle=float(rng.uniform(0, math.pi)),
        period=float(rng.uniform(0.07, 0.2)),
        phase=float(rng.uniform(0, 1)),
        noise_seed=int(rng.integers(2**31)),
    )


@lru_cache(maxsize=8)
def _grid(image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in image units; cached because every sample at a size reuses them."""
    t = (np.arange(image_size, dtype=np.float32) + 0.5) / image_size
    return t[None, :], t[:, None]


def render_background(bg: Background, image_size: int) -> np.ndarray:
    """(H, W, 3) uint8 background texture."""
    c0 = np.asarray(bg.colour0, np.float32)
    c1 = np.asarray(bg.colour1, np.float32)
    x, y = _grid(image_size)
    if bg.kind == "plain":
        return np.broadcast_to(c0.astype(np.uint8), (image_size, image_size, 3)).copy()
    if bg.kind == "noise":  # grey per-pixel noise around colour0
        noise = np.random.default_rng(bg.noise_seed).standard_normal((image_size, image_size, 1), np.float32)
        out = c0 + 16.0 * noise
    elif bg.kind == "stripes":
        u = (x * math.cos(bg.angle) + y * math.sin(bg.angle)) / bg.period + bg.phase
        out = np.where(((u % 1.0) < 0.5)[..., None], c0, c1)
    elif bg.kind == "checker":
        cells = np.floor(x / bg.period + bg.phase) + np.floor(y / bg.period + bg.phase)
        out = np.where((cells % 2 == 0)[..., None], c0, c1)
    elif bg.kind == "gradient":
        c, s = math.cos(bg.angle), math.sin(bg.angle)
        u = x * c + y * s
        lo, hi = min(0.0, c) + min(0.0, s), max(0.0, c) + max(0.0, s)  # range of u over the unit square
        w = ((u - lo) / max(hi - lo, 1e-6))[..., None]
        out = c0 * (1 - w) + c1 * w
    else:
        raise ValueError(f"background kind={bg.kind!r} is unknown; expected one of {BACKGROUNDS}")
    return np.clip(out, 0, 255).astype(np.uint8)


def paint(bg: Background, objects: tuple[ShapeObject, ...], instance: np.ndarray) -> np.ndarray:
    """RGB image from a background and an instance map whose ids index `objects` (id i+1 = objects[i])."""
    image = render_background(bg, instance.shape[0])
    lut = np.zeros((len(objects) + 1, 3), np.uint8)
    for i, obj in enumerate(objects):
        lut[i + 1] = obj.rgb
    fg = instance > 0
    image[fg] = lut[instance[fg]]
    return image
