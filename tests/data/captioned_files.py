"""Tiny captioned image folders for the real-data tests: PNGs of 20x12 pixels made with PIL, a captions.jsonl,
or a COCO-style annotation file, with chosen files broken."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from tcjepa.data.caption_index import split_of

SIZE = (20, 12)  # width, height: not square, so the centre crop matters


def names_in(split: str, n: int, prefix: str = "img") -> list[str]:
    """The first ``n`` file names ``<prefix><k>.png`` whose hash puts them in ``split``."""
    out, k = [], 0
    while len(out) < n:
        name = f"{prefix}{k}.png"
        if split_of(name) == split:
            out.append(name)
        k += 1
    return out


def write_image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def break_file(path: Path, how: str) -> None:
    """Make ``path`` unreadable: ``corrupt`` (a cut JPEG), ``empty`` (0 bytes) or ``missing``."""
    if how == "missing":
        path.unlink(missing_ok=True)
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "corrupt":
        Image.new("RGB", SIZE, (9, 9, 9)).save(path, format="JPEG")
        path.write_bytes(path.read_bytes()[:40])
    else:
        raise ValueError(how)


def captions_for(name: str) -> list[str]:
    return [f"A noisy picture called {name}. It has many colours.", f"Pixels of {name}."]


def write_jsonl(folder: Path, lines: list, name: str = "captions.jsonl") -> Path:
    """``lines``: dicts (written as JSON), str (written as is) or bytes (written raw)."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = [ln if isinstance(ln, bytes) else (ln if isinstance(ln, str) else json.dumps(ln)).encode() for ln in lines]
    path = folder / name
    path.write_bytes(b"\n".join(raw) + b"\n")
    return path


def make_folder(folder: Path, names: list[str], broken: dict[str, str] | None = None) -> Path:
    """A folder of images ``names`` with two captions each in captions.jsonl; ``broken`` maps name -> how."""
    for k, name in enumerate(names):
        write_image(folder / name, k)
    for name, how in (broken or {}).items():
        break_file(folder / name, how)
    write_jsonl(folder, [{"image": n, "captions": captions_for(n)} for n in names])
    return folder


def make_coco(root: Path, names: list[str], annotations_dir: str = "annotations") -> Path:
    """COCO's layout: ``<root>/annotations/captions_train2017.json`` and the images in ``<root>/train2017/``."""
    for k, name in enumerate(names):
        write_image(root / "train2017" / name, k)
    images = [{"id": 100 + k, "file_name": n, "width": SIZE[0], "height": SIZE[1]} for k, n in enumerate(names)]
    anns = [
        {"id": 1000 * k + j, "image_id": 100 + k, "caption": c}
        for k, n in enumerate(names)
        for j, c in enumerate(captions_for(n))
    ]
    path = root / annotations_dir / "captions_train2017.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": anns}))
    return path
