"""Where each sample of a WebDataset tar shard lies: member offsets read once from the tar headers.

A shard is read by seeking to a sample's members, never by extracting: nothing is written to disk, no link
is followed, and a member's name is only ever a key. The headers are read with :mod:`tarfile` (GNU and pax
long names included) and the result is cached (:func:`shard_index`), so training opens no tar twice.

Rules (docs/design.md §4.12):

* members are grouped into samples by key: the member path up to the first dot of its last component
  (``a/b/000017.jpg`` and ``a/b/000017.json`` are sample ``a/b/000017``); extensions are lower-cased;
* a sample's image is its first ``.jpg``, ``.jpeg``, ``.png`` or ``.webp`` member (in that preference);
  its captions come from ``.json`` and ``.txt`` (read at sample time, ``shards.py``);
* directory entries and members without an extension are ignored; other extensions are ignored too;
* problems (recorded, then raised or counted by ``data.on_error``): a member with an absolute path or a
  ``..`` component, a link, device or sparse member, a key without an image, and a truncated shard
  (samples wholly before the cut are kept, the one cut and everything after are lost).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")  # preference order when a sample has several
CAPTION_EXTS = ("json", "txt")
_VERSION = 1
SIDECAR_SUFFIX = ".idx.json"
_BLOCK = 512


@dataclass
class ShardIndex:
    """The samples of one shard: key, image member and caption members as (offset, size); -1 when absent."""

    path: Path
    keys: list[str] = field(default_factory=list)
    image: list[tuple[int, int]] = field(default_factory=list)
    json: list[tuple[int, int]] = field(default_factory=list)
    txt: list[tuple[int, int]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    members: int = 0

    def __len__(self) -> int:
        return len(self.keys)

    def to_dict(self) -> dict:
        rows = [[k, *i, *j, *t] for k, i, j, t in zip(self.keys, self.image, self.json, self.txt)]
        return {"samples": rows, "problems": self.problems, "members": self.members}

    @classmethod
    def from_dict(cls, path: Path, d: dict) -> ShardIndex:
        idx = cls(path, problems=list(d["problems"]), members=int(d["members"]))
        for k, io_, is_, jo, js, to, ts in d["samples"]:
            idx.keys.append(k)
            idx.image.append((io_, is_))
            idx.json.append((jo, js))
            idx.txt.append((to, ts))
        return idx


def split_member(name: str) -> tuple[str, str] | None:
    """(key, extension) of a member name, or None when it has no extension; WebDataset's grouping rule."""
    folder, base = posixpath.split(name)
    if "." not in base.lstrip("."):
        return None
    stem, ext = base.split(".", 1) if not base.startswith(".") else ("", base[1:])
    return posixpath.join(folder, stem) if folder else stem, ext.lower()


def unsafe_reason(info: tarfile.TarInfo) -> str | None:
    """Why a member must not be used, or None; directories and plain files with safe names pass."""
    name = info.name
    if name.startswith("/") or posixpath.isabs(name) or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if ".." in name.replace("\\", "/").split("/"):
        return "a '..' path component"
    if info.issym() or info.islnk():
        return f"a {'symbolic' if info.issym() else 'hard'} link (to {info.linkname!r}; links are never followed)"
    if info.issparse():
        return "a sparse file"
    if not (info.isreg() or info.isdir()):
        return "a device, fifo or other special file"
    return None


def scan_shard(path: str | Path) -> ShardIndex:
    """Read ``path``'s tar headers (not its data) into a :class:`ShardIndex`."""
    path = Path(path)
    size = path.stat().st_size
    idx = ShardIndex(path)
    groups: dict[str, dict[str, tuple[int, int]]] = {}
    cut: str | None = None
    try:
        with tarfile.open(path, "r:") as tf:
            while True:
                try:
                    info = tf.next()
                except tarfile.ReadError as e:  # a header cut in half, or data missing before the next one
                    cut = f"unreadable after byte {tf.offset} ({e})"
                    break
                if info is None:
                    break
                idx.members += 1
                reason = unsafe_reason(info)
                if reason:
                    idx.problems.append(f"{path}: member {info.name!r} is {reason}; skipped")
                    continue
                if info.isdir():
                    continue
                if info.offset_data + info.size > size:
                    cut = f"member {info.name!r} is cut at byte {size} (it needs {info.offset_data + info.size})"
                    groups.pop((split_member(info.name) or ("", ""))[0], None)  # its sample is incomplete
                    break
                parts = split_member(info.name)
                if parts:
                    groups.setdefault(parts[0], {}).setdefault(parts[1], (info.offset_data, info.size))
            end = tf.offset
    except tarfile.ReadError as e:  # not a tar at all, or cut inside its first header
        idx.problems.append(f"{path}: not a readable tar file ({e})")
        return idx
    if cut is None and not _has_end_marker(path, end, size):
        cut = f"it ends at byte {size} without the end-of-archive blocks"
    for key, members in groups.items():
        image = next((members[e] for e in IMAGE_EXTS if e in members), None)
        if image is None:
            idx.problems.append(f"{path}: sample {key!r} has no image ({', '.join(sorted(members))}); skipped")
            continue
        idx.keys.append(key)
        idx.image.append(image)
        idx.json.append(members.get("json", (-1, -1)))
        idx.txt.append(members.get("txt", (-1, -1)))
    if cut is not None:
        idx.problems.append(f"{path}: truncated shard: {cut}; the {len(idx)} samples before the cut are kept")
    return idx


def _has_end_marker(path: Path, end: int, size: int) -> bool:
    if size < end + 2 * _BLOCK:
        return False
    with open(path, "rb") as f:
        f.seek(end)
        return f.read(2 * _BLOCK) == bytes(2 * _BLOCK)


def _stamp(path: Path) -> dict:
    st = path.stat()
    return {"version": _VERSION, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def cache_places(path: Path) -> list[Path]:
    """Where the index of ``path`` is cached: a sidecar next to the shard, else a per-user cache folder."""
    root = Path(os.environ.get("TCJEPA_SHARD_INDEX_DIR") or Path.home() / ".cache" / "tcjepa" / "shard-index")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:20]
    return [path.with_name(path.name + SIDECAR_SUFFIX), root / f"{digest}{SIDECAR_SUFFIX}"]


def _read_cached(place: Path, shard: Path, stamp: dict) -> ShardIndex | None:
    try:
        d = json.loads(place.read_text())
        if {k: d.get(k) for k in stamp} == stamp:  # same size, mtime and format: still this shard's index
            return ShardIndex.from_dict(shard, d)
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent, stale or damaged: scan again
    return None


def _write_atomic(place: Path, text: str) -> bool:
    try:
        place.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=place.parent, prefix=".tmp-", suffix=SIDECAR_SUFFIX)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, place)  # atomic: concurrent ranks indexing the same shard never see half a file
        return True
    except OSError:
        return False


def shard_index(path: str | Path, cache: bool = True) -> ShardIndex:
    """The index of a shard, from the cache when its size and mtime still match, else scanned and cached."""
    path = Path(path)
    stamp = _stamp(path)
    places = cache_places(path) if cache else []
    for place in places:
        found = _read_cached(place, path, stamp)
        if found is not None:
            return found
    idx = scan_shard(path)
    if places:
        text = json.dumps({**stamp, **idx.to_dict()}, separators=(",", ":"))
        any(_write_atomic(place, text) for place in places)  # the first writable place wins
    return idx
