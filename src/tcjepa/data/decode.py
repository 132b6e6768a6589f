"""Image files -> the (3, S, S) float tensors in [0, 1] that every dataset item carries.

Real photographs arrive in every mode PIL knows: grey, palette, with or without transparency, 16-bit
scans, CMYK prints, phone pictures stored sideways with an EXIF orientation tag. :func:`load_rgb` turns
each into 8-bit RGB as a viewer would show it; :func:`decode_image` then resizes the shorter side to S and
keeps the centre square. Anything that cannot be read raises :class:`BadSample` naming the file and what
was wrong, so the dataset can raise it or skip the sample (``data.on_error``).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

# Transparent pixels are composited onto white: transparent images (logos, product shots, icons) are made
# to be seen on a white page, and that is how their captions' authors saw them.
BACKGROUND = (255, 255, 255)
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_SIXTEEN_BIT = 65535 / 255  # 16-bit code values per 8-bit step: 65535 -> 255, 32768 -> 128


# Why a sample could not be used: the counters ``data_<reason>_skipped`` in metrics.jsonl are per reason.
SKIP_REASONS = ("missing", "empty", "undecodable", "bad_captions", "shard")


class BadSample(ValueError):
    """A sample (an image file or an index entry) that cannot be used; the message names it and the fault,
    ``reason`` (one of SKIP_REASONS) says which kind of fault, for the per-reason skip counters."""

    def __init__(self, message: str, reason: str = "undecodable") -> None:
        super().__init__(message)
        self.reason = reason


Source = str | os.PathLike | bytes


def _name(source: Source, name: str | None) -> str:
    if name is not None:
        return name
    return "<image bytes>" if isinstance(source, bytes) else str(source)


def _open(source: Source, name: str) -> Image.Image:
    if isinstance(source, bytes):
        if not source:
            raise BadSample(f"{name}: empty image data (0 bytes)", "empty")
        return Image.open(io.BytesIO(source))
    path = Path(source)
    if not path.is_file():
        raise BadSample(f"{name}: no such image file" + (" (it is a folder)" if path.is_dir() else ""), "missing")
    if path.stat().st_size == 0:
        raise BadSample(f"{name}: empty image file (0 bytes)", "empty")
    return Image.open(path)


def _sixteen_bit_to_rgb(img: Image.Image) -> Image.Image:
    # PIL's own I -> L conversion clips at 255 instead of scaling, which would turn most of a 16-bit scan
    # white. Mode I (32-bit) is what older PIL gives for 16-bit PNGs, so it is read as 16-bit too.
    values = np.asarray(img).astype(np.float64)
    grey = np.clip(np.rint(values / _SIXTEEN_BIT), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


def _to_rgb(img: Image.Image, name: str) -> Image.Image:
    mode = img.mode
    if mode == "I" or mode.startswith("I;16"):
        return _sixteen_bit_to_rgb(img)
    if mode == "F":
        raise BadSample(f"{name}: 32-bit float pixels (mode F) have no agreed range; save it as 8- or 16-bit")
    if mode in _ALPHA_MODES or "transparency" in img.info:  # palette or grey with a transparent colour too
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "RGB":
        return img
    try:  # L, 1, P, CMYK, YCbCr, ...
        return img.convert("RGB")
    except (ValueError, OSError) as e:
        raise BadSample(f"{name}: cannot convert pixel mode {mode} to RGB ({e})") from None


def _upright(img: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # orientation is metadata: a broken tag must not cost the picture
        return img


def load_rgb(source: Source, name: str | None = None, draft_size: int | None = None) -> Image.Image:
    """The image as 8-bit RGB, upright (EXIF orientation applied), transparency on white.

    ``draft_size`` lets JPEG decode at a reduced scale that still keeps both sides >= it (much faster for
    large photographs that are shrunk anyway).
    """
    label = _name(source, name)
    try:
        with _open(source, label) as img:
            if draft_size is not None and img.format == "JPEG":
                img.draft(None, (draft_size, draft_size))
            img.load()  # decode now, so a truncated file fails here and not later
            return _to_rgb(_upright(img), label)
    except BadSample:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError) as e:
        # UnidentifiedImageError and "image file is truncated" are OSErrors; PIL's parsers raise the others.
        raise BadSample(f"{label}: cannot decode image ({type(e).__name__}: {e})") from None


def centre_square(img: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` and keep the centre square, in one antialiased resampling."""
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) / 2, (h - side) / 2
    return img.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side))


def decode_image(source: Source, image_size: int, name: str | None = None) -> torch.Tensor:
    """An image file (path or bytes) as a (3, S, S) float32 tensor in [0, 1], S = ``image_size``."""
    if image_size < 1:
        raise ValueError(f"decode_image: image_size={image_size}; expected >= 1")
    square = centre_square(load_rgb(source, name, draft_size=image_size), image_size)
    chw = np.ascontiguousarray(np.asarray(square, dtype=np.uint8).transpose(2, 0, 1))
    return torch.from_numpy(np.divide(chw, np.float32(255), dtype=np.float32))  # numpy: no thread pool
