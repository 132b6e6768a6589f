"""``tcjepa data validate PATH``: what an image-caption folder or a set of shards holds, and what would stop a run.

Training finds a bad file only when a batch reaches it, possibly hours in; this reads the whole index and
decodes every image once, up front, with the same code the datasets use (``tcjepa.data.caption_index``,
``tcjepa.data.decode``). It reports the images, captions per image, malformed index entries, missing and
unreadable files, empty and overlong captions, and duplicates, as text and optionally as JSON, and exits
non-zero when errors (malformed entries, missing or unreadable images) exceed ``--max-error-rate`` of the
entries. WebDataset shards (a ``.tar`` brace pattern) get the same report: the header problems of
``tar_index.py`` and unreadable caption members count as malformed entries, tar members as entries.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from ..config import ConfigError
from ..data.caption_index import SPLITS, CaptionIndex, read_index, split_of
from ..data.decode import BadSample, load_rgb
from ..data.sentences import split_captions
from ..data.shard_paths import looks_like_shards, parse_shard_path
from ..data.shards import read_sample
from ..data.tar_index import shard_index

# A sentence of more words than this is cut by the default text encoder (text.max_len = 32 tokens, two of
# them special, and a word is at least one token).
OVERLONG_WORDS = 30
_LISTED = 1000  # problems and bad files written out in full; all are counted
_EXAMPLES = 3


def detect_format(path: str | Path) -> str:
    """``webdataset`` for tar shards, ``coco`` for a ``.json`` file, ``jsonl`` otherwise (a ``.jsonl`` file or a
    folder)."""
    if looks_like_shards(str(path)):
        return "webdataset"
    p = Path(path)
    return "coco" if p.is_file() and p.suffix.lower() == ".json" else "jsonl"


def _read_file(index: CaptionIndex, i: int) -> tuple[str, bytes]:
    path = index.path(i)
    try:
        return str(path), path.read_bytes()
    except OSError as e:
        raise FileNotFoundError(f"{path}: {e.strerror or e}") from None


def _shard_reader(path: str) -> tuple[CaptionIndex, Callable[[CaptionIndex, int], tuple[str, bytes]]]:
    """Shards as an index (keys for images, problems from the headers and the caption members) and a reader
    of each sample's image bytes, so that shards get the same report as a folder."""
    shards = [shard_index(p) for s in parse_shard_path(path) for p in s.shards]
    index = CaptionIndex(source=Path(path), root=Path())
    where = []
    for shard in shards:
        index.entries += shard.members
        index.problems += shard.problems
        for i in range(len(shard)):
            try:
                _, captions, _ = read_sample(shard, i)
            except BadSample as e:
                index.problems.append(str(e))
                continue
            index.images.append(shard.keys[i])
            index.captions.append(captions)
            where.append((shard, i))

    def read(_: CaptionIndex, i: int) -> tuple[str, bytes]:
        image, _, name = read_sample(*where[i])
        return name, image

    return index, read


def _check_files(index: CaptionIndex, progress: bool, read=_read_file) -> dict:
    """Decode every image: missing and unreadable files, and images whose bytes repeat another's."""
    missing, unreadable, first_of = [], [], {}
    repeats = 0
    for i in tqdm(range(len(index)), desc="decoding", unit="img", disable=not progress, dynamic_ncols=True):
        try:
            path, data = read(index, i)
        except (FileNotFoundError, BadSample) as e:
            missing.append(str(e))
            continue
        digest = hashlib.sha1(data).digest()
        repeats += digest in first_of
        first_of.setdefault(digest, i)
        try:
            load_rgb(data, name=path, draft_size=64)
        except BadSample as e:
            unreadable.append(str(e))
    return {"missing": missing, "unreadable": unreadable, "repeats": repeats}


def _caption_report(index: CaptionIndex) -> dict:
    sentences = [split_captions(c) for c in index.captions]
    per_image = Counter(len(c) for c in index.captions)
    empty = sum(1 for caps in index.captions for c in caps if not split_captions([c]))
    overlong = [s for caps in sentences for s in caps if len(s.split()) > OVERLONG_WORDS]
    images_of: dict[str, set[int]] = {}
    for i, caps in enumerate(sentences):
        for s in caps:
            images_of.setdefault(s.lower(), set()).add(i)
    return {
        "captions": sum(len(c) for c in index.captions),
        "sentences": sum(len(s) for s in sentences),
        "captions_per_image": {str(k): per_image[k] for k in sorted(per_image)},
        "captionless_images": sum(1 for s in sentences if not s),
        "empty_captions": empty,
        "overlong_sentences": len(overlong),
        "overlong_examples": [s[:120] + ("..." if len(s) > 120 else "") for s in overlong[:_EXAMPLES]],
        "duplicate_sentences_within_image": sum(len(s) - len({x.lower() for x in s}) for s in sentences),
        "sentences_shared_across_images": sum(1 for ids in images_of.values() if len(ids) > 1),
    }


def validate(path: str | Path, fmt: str | None = None, max_error_rate: float = 0.01, progress: bool = True) -> dict:
    """The summary of ``path`` (see the module docstring); ``ok`` is False when the error rate is above
    ``max_error_rate``."""
    fmt = fmt or detect_format(path)
    if fmt == "webdataset":
        index, read = _shard_reader(str(path))
    else:
        index, read = read_index(fmt, path), _read_file
    files = _check_files(index, progress, read)
    errors = len(index.problems) + len(files["missing"]) + len(files["unreadable"])
    items = len(index) + len(index.problems)
    rate = errors / max(1, items)
    splits = Counter(split_of(image) for image in index.images)
    return {
        "path": str(index.source),
        "format": fmt,
        "image_root": str(index.root),
        "images": len(index),
        "splits": {s: splits[s] for s in SPLITS},
        "entries": index.entries,
        "malformed_entries": len(index.problems),
        "missing_images": len(files["missing"]),
        "unreadable_images": len(files["unreadable"]),
        **_caption_report(index),
        "duplicate_entries": index.duplicates,
        "duplicate_image_files": files["repeats"],
        "errors": errors,
        "error_rate": rate,
        "max_error_rate": max_error_rate,
        "ok": rate <= max_error_rate,
        "problems": index.problems[:_LISTED],
        "bad_files": (files["missing"] + files["unreadable"])[:_LISTED],
    }


def format_summary(s: dict) -> str:
    """The summary for a person: counts first, then the first problems, then the verdict."""
    hist = ", ".join(f"{k}: {v}" for k, v in s["captions_per_image"].items()) or "none"
    lines = [
        f"{s['path']} ({s['format']}, images in {s['image_root']})",
        f"  images            {s['images']}  (train {s['splits']['train']}, val {s['splits']['val']}, "
        f"test {s['splits']['test']})",
        f"  captions          {s['captions']} -> {s['sentences']} sentences; captions per image {{{hist}}}",
        f"  captionless       {s['captionless_images']} images (kept: they train the text-free path)",
        f"  empty captions    {s['empty_captions']}",
        f"  overlong          {s['overlong_sentences']} sentences over {OVERLONG_WORDS} words (truncated in training)",
        *[f"    {e}" for e in s["overlong_examples"]],
        f"  duplicates        {s['duplicate_entries']} repeated entries (merged), {s['duplicate_image_files']} "
        f"identical image files, {s['duplicate_sentences_within_image']} repeated sentences within an image, "
        f"{s['sentences_shared_across_images']} sentences shared by several images",
        f"  malformed entries {s['malformed_entries']}",
        f"  missing images    {s['missing_images']}",
        f"  unreadable images {s['unreadable_images']}",
    ]
    shown = (s["problems"] + s["bad_files"])[:10]
    if shown:
        lines.append("  first problems:")
        lines += [f"    {p}" for p in shown]
    verdict = "OK" if s["ok"] else "FAILED"
    lines.append(
        f"{verdict}: {s['errors']} errors in {s['images'] + s['malformed_entries']} entries, error rate "
        f"{s['error_rate']:.4f} ({'<=' if s['ok'] else '>'} --max-error-rate {s['max_error_rate']})"
    )
    return "\n".join(lines)


def run_validate(path: str, fmt: str | None, json_out: str | None, max_error_rate: float, progress: bool = True) -> int:
    """``tcjepa data validate``: print the summary, write it as JSON if asked; 1 when the data fails."""
    if not 0 <= max_error_rate <= 1:
        raise ConfigError(f"--max-error-rate {max_error_rate}: expected a fraction in [0, 1]")
    summary = validate(path, fmt, max_error_rate, progress)
    print(format_summary(summary))
    if json_out:
        out = Path(json_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {out}")
    return 0 if summary["ok"] else 1
