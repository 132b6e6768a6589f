"""Which images a captioned folder holds and their captions: a JSONL file or a COCO captions file, read once.

Both formats become one :class:`CaptionIndex` (image paths, captions as given, and the problems met), read
at construction so that training never parses text. Rules (docs/design.md §4.11):

* ``jsonl``: ``data.path`` is a ``.jsonl`` file, or a folder holding ``captions.jsonl``. Each line is
  ``{"image": "rel/path.jpg", "captions": ["...", ...]}`` (or ``"caption": "..."``; both are merged);
  image paths are relative to the JSONL file's folder (absolute ones are used as they are). Blank lines
  are ignored; an image listed twice is one image with the captions of both lines.
* ``coco``: ``data.path`` is a COCO captions annotation file (``images`` with ``id`` and ``file_name``,
  ``annotations`` with ``image_id`` and ``caption``). Its images are in the folder named after the file
  without ``captions_`` (``captions_train2017.json`` -> ``train2017/``), looked for beside the file and
  then one level up (COCO's own layout: ``annotations/`` next to ``train2017/``).
* An image without captions is kept: it trains the text-free path and is counted as
  ``captions_captionless`` in the batch stats.
* Splits: an image is in ``train``, ``val`` or ``test`` by the SHA-1 of its path as written (98/1/1), so
  splits never share an image and an image keeps its split when the file grows.
* A malformed entry (not UTF-8, not JSON, no image, captions not a list of strings) is a problem
  recorded with its file and line; with ``data.on_error=raise`` any problem raises :class:`BadSample`
  listing them, with ``skip`` the entry is left out and counted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

from .decode import BadSample

log = logging.getLogger("tcjepa.data")

FORMATS = ("jsonl", "coco")
SPLITS = ("train", "val", "test")
JSONL_NAME = "captions.jsonl"  # what a folder passed as data.path must hold
_SHOWN = 5  # problems quoted in a message; all are counted


def split_of(image: str) -> str:
    """The split of an image path, from the SHA-1 of its normalised form: 98% train, 1% val, 1% test."""
    bucket = int.from_bytes(hashlib.sha1(posixpath.normpath(image).encode("utf-8")).digest()[:8], "big") % 100
    return "train" if bucket < 98 else "val" if bucket == 98 else "test"


@dataclass
class CaptionIndex:
    """Images (paths relative to ``root``, as written) and their captions, in the order first listed."""

    source: Path  # the file read
    root: Path  # image paths are relative to this folder
    images: list[str] = field(default_factory=list)
    captions: list[list[str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # "<file>:<line>: what is wrong"
    entries: int = 0  # lines or annotation entries read, malformed ones included
    duplicates: int = 0  # image entries merged into an earlier entry of the same image

    def __len__(self) -> int:
        return len(self.images)

    def path(self, i: int) -> Path:
        return self.root / self.images[i]

    def _add(self, image: str, captions: list[str], seen: dict[str, int]) -> None:
        key = posixpath.normpath(image)
        if key in seen:
            self.captions[seen[key]].extend(captions)
            self.duplicates += 1
            return
        seen[key] = len(self.images)
        self.images.append(image)
        self.captions.append(list(captions))

    def rows(self, split: str) -> list[int]:
        if split not in SPLITS:
            raise ValueError(f"split={split!r}: image-caption data has the splits {', '.join(SPLITS)}")
        return [i for i, image in enumerate(self.images) if split_of(image) == split]

    def check(self, on_error: str) -> None:
        """Raise on recorded problems (``on_error="raise"``), or log how many entries were left out."""
        if not self.problems:
            return
        shown = "\n  ".join(self.problems[:_SHOWN])
        more = f"\n  ... and {len(self.problems) - _SHOWN} more" if len(self.problems) > _SHOWN else ""
        head = f"{self.source}: {len(self.problems)} malformed entr{'y' if len(self.problems) == 1 else 'ies'}"
        if on_error == "raise":
            raise BadSample(
                f"{head} of {self.entries}:\n  {shown}{more}\nFix them, or pass data.on_error=skip to leave them "
                "out (they are counted); `tcjepa data validate` lists every problem."
            )
        log.warning("%s left out (data.on_error=skip):\n  %s%s", head, shown, more)


def jsonl_file(path: str | Path) -> Path:
    """The JSONL file ``data.path`` names: the file itself, or ``captions.jsonl`` in the folder."""
    p = Path(path)
    if p.is_dir():
        p = p / JSONL_NAME
        if not p.is_file():
            raise FileNotFoundError(f"data.path={path} is a folder without {JSONL_NAME}; add it or pass the JSONL file")
    elif not p.is_file():
        raise FileNotFoundError(f"data.path={path} does not exist; pass a .jsonl file or a folder with {JSONL_NAME}")
    return p


def _jsonl_entry(raw: bytes) -> tuple[str, list[str]]:
    """(image, captions) of one line, or ValueError saying what is wrong with it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})") from None
    try:
        entry = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(entry, dict):
        raise ValueError(f"a JSON {type(entry).__name__}, not an object with an image and its captions")
    image = entry.get("image")
    if not isinstance(image, str) or not image.strip():
        raise ValueError('no "image" path (a non-empty string)')
    if "captions" not in entry and "caption" not in entry:
        raise ValueError('no "captions" list or "caption" string (an image without captions: "captions": [])')
    captions = entry.get("captions", [])
    if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
        raise ValueError('"captions" must be a list of strings (for one caption use "caption": "...")')
    single = entry.get("caption")
    if single is not None and not isinstance(single, str):
        raise ValueError('"caption" must be a string')
    return image, ([single] if single is not None else []) + captions


def read_jsonl(path: str | Path) -> CaptionIndex:
    """The index of a JSONL file (or a folder's ``captions.jsonl``); malformed lines land in ``problems``."""
    source = jsonl_file(path)
    index = CaptionIndex(source=source, root=source.parent)
    seen: dict[str, int] = {}
    for number, raw in enumerate(source.read_bytes().splitlines(), start=1):
        if not raw.strip():
            continue
        index.entries += 1
        try:
            image, captions = _jsonl_entry(raw)
        except ValueError as e:
            index.problems.append(f"{source}:{number}: {e}")
            continue
        index._add(image, captions, seen)
    return index


def coco_image_root(annotations: Path) -> Path:
    """The image folder of a COCO captions file: ``<stem without captions_>/`` beside it or one level up."""
    name = annotations.stem.removeprefix("captions_")
    tried = [annotations.parent / name, annotations.parent.parent / name]
    for folder in tried:
        if folder.is_dir():
            return folder
    raise FileNotFoundError(
        f"no image folder for {annotations}: looked for {tried[0]} and {tried[1]} (the file's name without "
        "'captions_', beside it or one level up, as COCO lays out annotations/ and train2017/)"
    )


def read_coco(path: str | Path) -> CaptionIndex:
    """The index of a COCO captions annotation file; malformed entries land in ``problems``."""
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"data.path={path} does not exist; pass a COCO captions file (captions_*.json)")
    try:
        data = json.loads(source.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadSample(f"{source}: not a readable JSON file ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise BadSample(f'{source}: not a COCO captions file (no "images" list)')
    annotations = data.get("annotations", [])
    if not isinstance(annotations, list):
        raise BadSample(f'{source}: "annotations" is not a list')
    index = CaptionIndex(source=source, root=coco_image_root(source))
    by_id: dict[int, int] = {}
    seen: dict[str, int] = {}
    for k, image in enumerate(data["images"]):
        index.entries += 1
        ok = isinstance(image, dict) and isinstance(image.get("id"), int) and isinstance(image.get("file_name"), str)
        if not ok or not image["file_name"].strip():
            index.problems.append(f'{source}: images[{k}]: needs an integer "id" and a "file_name"')
        elif image["id"] in by_id:
            index.problems.append(f"{source}: images[{k}]: id {image['id']} is listed twice")
        else:
            index._add(image["file_name"], [], seen)
            by_id[image["id"]] = seen[posixpath.normpath(image["file_name"])]
    for k, ann in enumerate(annotations):
        index.entries += 1
        if not isinstance(ann, dict) or not isinstance(ann.get("caption"), str):
            index.problems.append(f'{source}: annotations[{k}]: needs an "image_id" and a "caption" string')
        elif not isinstance(ann.get("image_id"), int) or ann["image_id"] not in by_id:
            index.problems.append(f"{source}: annotations[{k}]: image_id {ann.get('image_id')!r} is not in images")
        else:
            index.captions[by_id[ann["image_id"]]].append(ann["caption"])
    return index


def read_index(fmt: str, path: str | Path) -> CaptionIndex:
    """The index of ``path`` read as ``fmt`` (one of :data:`FORMATS`)."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}")
    return read_jsonl(path) if fmt == "jsonl" else read_coco(path)
