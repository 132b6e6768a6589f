"""Tiny WebDataset shards for the shard tests: PNG members of 20x12 pixels, captions as .json or .txt, and
raw members (links, escaping names, cut files) written with tarfile directly."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from tcjepa.data.caption_index import split_of

from .captioned_files import SIZE


def keys_in(split: str, n: int, prefix: str = "s") -> list[str]:
    """The first ``n`` keys ``<prefix><k>`` whose hash puts them in ``split``."""
    out, k = [], 0
    while len(out) < n:
        if split_of(f"{prefix}{k}") == split:
            out.append(f"{prefix}{k}")
        k += 1
    return out


def png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def captions_json(key: str) -> bytes:
    return json.dumps({"captions": [f"Sample {key} in a shard. It is noisy.", f"Pixels of {key}."]}).encode()


def add(tf: tarfile.TarFile, name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(data) if kind == tarfile.REGTYPE else 0
    tf.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def write_shard(path: Path, keys: list[str], seed: int = 0, extra=None) -> Path:
    """A shard of ``keys`` (png + json captions each); ``extra(tf)`` may add raw members at the end."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for k, key in enumerate(keys):
            add(tf, f"{key}.png", png(seed + k))
            add(tf, f"{key}.json", captions_json(key))
        if extra:
            extra(tf)
    return path


def write_shards(folder: Path, keys: list[str], per_shard: int, prefix: str = "shard") -> str:
    """``keys`` in shards of ``per_shard``; returns the brace pattern naming them all."""
    chunks = [keys[i : i + per_shard] for i in range(0, len(keys), per_shard)]
    for n, chunk in enumerate(chunks):
        write_shard(folder / f"{prefix}-{n:06d}.tar", chunk, seed=1000 * n)
    return f"{folder}/{prefix}-{{000000..{len(chunks) - 1:06d}}}.tar"
