"""``tcjepa data convert SRC --out DIR``: an image-caption folder (jsonl) or COCO file -> WebDataset shards.

Shard ``k`` holds entries ``k*N .. (k+1)*N - 1`` of the source index (``N = --shard-size``), in index order,
as ``KEY.<ext>`` (the image file's bytes, unchanged) + ``KEY.json`` (``{"captions": [...], "image": path}``),
``KEY`` being the entry's number, zero-padded. Because a shard's content depends only on the source and
``N``, a conversion killed at any point resumes exactly (``--resume``): whole shards are kept (each was
written to a temporary file and renamed), the temporary file of the interrupted one is removed and that
shard is written again. ``convert.json`` records what is being converted, so a resume with another source
or shard size is refused; ``manifest.json`` (shards, sample counts, bytes, left-out entries, the brace
pattern to train with) and each shard's index sidecar are written at the end.

Images in formats the reader does not take from a tar (anything but jpg, jpeg, png, webp) are re-encoded
as PNG; missing or undecodable files and malformed index entries are left out and listed.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

from tqdm import tqdm

from ..config import ConfigError
from ..data.caption_index import CaptionIndex, read_index
from ..data.decode import BadSample, load_rgb
from ..data.shard_writer import TMP_PREFIX, ShardFile, image_ext, shard_name
from ..data.tar_index import IMAGE_EXTS, shard_index
from .data_tools import detect_format

PLAN = "convert.json"
MANIFEST = "manifest.json"


def _image_member(index: CaptionIndex, i: int) -> tuple[bytes, str]:
    """The bytes and extension to store for entry ``i``; BadSample when the file cannot be used."""
    path = index.path(i)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BadSample(f"{path}: {e.strerror or e}") from None
    ext = image_ext(index.images[i])
    if ext in IMAGE_EXTS:
        return data, ext
    buf = io.BytesIO()  # a format the shard reader does not pick up (bmp, gif, tiff, ...): lossless PNG
    load_rgb(data, name=str(path)).save(buf, format="PNG")
    return buf.getvalue(), "png"


def _check_plan(out: Path, plan: dict, resume: bool) -> None:
    plan_file = out / PLAN
    started = plan_file.is_file() or any(out.glob("shard-*.tar"))
    if started and not resume:
        raise ConfigError(f"{out} already holds a conversion; pass --resume to continue it, or choose another --out")
    if plan_file.is_file():
        saved = json.loads(plan_file.read_text())
        changed = [k for k in plan if saved.get(k) != plan[k]]
        if changed:
            was = ", ".join(f"{k}={saved.get(k)!r}" for k in changed)
            raise ConfigError(f"{out} was converted with {was}; resume with the same source and --shard-size")
    else:
        plan_file.write_text(json.dumps(plan, indent=2) + "\n")


def _write_shard(index: CaptionIndex, out: Path, number: int, rows: range, width: int, bar) -> list[str]:
    shard = ShardFile(out / shard_name(number))
    left_out = []
    for i in rows:
        try:
            data, ext = _image_member(index, i)
        except BadSample as e:
            left_out.append(str(e))
        else:
            shard.add(f"{i:0{width}d}", data, ext, {"captions": index.captions[i], "image": index.images[i]})
        bar.update(1)
    shard.close()
    return left_out


def convert(
    src: str, out: str, fmt: str | None = None, shard_size: int = 1000, resume: bool = False, progress: bool = True
) -> dict:
    """Convert ``src`` into shards in ``out`` (see the module docstring); returns the manifest."""
    if shard_size < 1:
        raise ConfigError(f"--shard-size {shard_size}: expected >= 1")
    fmt = fmt or detect_format(src)
    index = read_index(fmt, src)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    plan = {"source": str(index.source.resolve()), "format": fmt, "shard_size": shard_size, "entries": len(index)}
    _check_plan(folder, plan, resume)
    for tmp in folder.glob(TMP_PREFIX + "*"):
        tmp.unlink()  # an interrupted shard: written again below
    n_shards = max(1, math.ceil(len(index) / shard_size))
    width = max(6, len(str(len(index))))
    left_out: list[str] = []
    with tqdm(total=len(index), desc="converting", unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for k in range(n_shards):
            rows = range(k * shard_size, min(len(index), (k + 1) * shard_size))
            if (folder / shard_name(k)).is_file():
                bar.update(len(rows))  # finished before the interruption
                continue
            left_out += _write_shard(index, folder, k, rows, width, bar)
    shards = [shard_index(folder / shard_name(k)) for k in range(n_shards)]  # also writes each index sidecar
    manifest = {
        **plan,
        "samples": sum(len(s) for s in shards),
        "shards": [{"name": s.path.name, "samples": len(s), "bytes": s.path.stat().st_size} for s in shards],
        "pattern": str(folder / f"shard-{{000000..{n_shards - 1:06d}}}.tar"),
        "malformed_entries": index.problems,
        "left_out": left_out,  # this run's only: shards kept from before a resume are not re-read
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def run_convert(src: str, out: str, fmt: str | None, shard_size: int, resume: bool, progress: bool = True) -> int:
    """``tcjepa data convert``: convert, then say what was written and how to train on it."""
    m = convert(src, out, fmt, shard_size, resume, progress)
    dropped = len(m["malformed_entries"]) + len(m["left_out"])
    print(
        f"wrote {m['samples']} samples in {len(m['shards'])} shards to {out} ({dropped} entries left out; see "
        f"{Path(out) / MANIFEST})"
    )
    print(f"train on them with: data.name=webdataset data.path='{m['pattern']}'")
    return 0
