"""Writing WebDataset tar shards: one sample = ``KEY.<image ext>`` + ``KEY.json``, each shard written atomically.

A shard is written to a hidden temporary file in the output folder and renamed when complete, so a shard
name on disk always means a whole shard: a converter killed mid-shard leaves only a temporary file, which
the next run removes and redoes. Members get fixed metadata (mtime 0, uid/gid 0, mode 0644, plain ustar
names or pax for long ones), so the same samples give byte-identical shards.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

TMP_PREFIX = ".tmp-"


def shard_name(number: int, prefix: str = "shard") -> str:
    return f"{prefix}-{number:06d}.tar"


def _member(name: str, data: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info, io.BytesIO(data)


def image_ext(path: str) -> str:
    """The member extension of an image file: its suffix, lower-cased (``jpeg`` stays ``jpeg``)."""
    return Path(path).suffix.lower().lstrip(".") or "img"


class ShardFile:
    """One shard being written: ``add`` samples, then ``close`` renames it into place (or ``abort``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(TMP_PREFIX + self.path.name)
        self._tar = tarfile.open(self.tmp, "w", format=tarfile.PAX_FORMAT)  # noqa: SIM115 (closed by close/abort)
        self.samples = 0

    def add(self, key: str, image: bytes, ext: str, meta: dict) -> None:
        if "." in key or not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"sample key {key!r}: a key has no dots, is relative and has no '..'")
        self._tar.addfile(*_member(f"{key}.{ext}", image))
        self._tar.addfile(*_member(f"{key}.json", json.dumps(meta, ensure_ascii=False).encode("utf-8")))
        self.samples += 1

    def close(self) -> Path:
        self._tar.close()
        with open(self.tmp, "rb+") as f:
            os.fsync(f.fileno())  # the data is on disk before the name says the shard is whole
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        self._tar.close()
        self.tmp.unlink(missing_ok=True)
