"""Captioned photographs: the ``jsonl`` and ``coco`` entries of ``DATASETS`` (docs/design.md §4.11).

One map-style dataset over a :class:`~tcjepa.data.caption_index.CaptionIndex` split. Items follow the
shapes format (``image`` (3, S, S) float in [0, 1], ``captions`` one sentence each, ``labels`` empty,
``index``) plus ``skipped``: how many unreadable samples were passed over to produce it, which the stream
sums into ``stats["data_skipped"]``, and, when any were, ``skip_reasons`` (reason -> count, see
``decode.SKIP_REASONS``), summed into ``stats["data_<reason>_skipped"]``.

An image that cannot be decoded raises :class:`BadSample` naming the file (``data.on_error=raise``, the
default), or is replaced by the next readable sample of the split, wrapping at the end (``skip``). The
replacement depends only on the index and the files, so the batch of step s stays a pure function of
(seed, s) and keeps its size; after ``MAX_TRIES`` unreadable samples in a row it gives up with an error
instead of searching forever.
"""

from __future__ import annotations

import logging

import torch
from torch.utils.data import Dataset

from ..config import Config
from .caption_index import CaptionIndex, read_index
from .decode import BadSample, decode_image
from .sentences import split_captions

log = logging.getLogger("tcjepa.data")

MAX_TRIES = 32  # unreadable samples in a row before on_error=skip gives up
_LOGGED_SKIPS = 5  # skips logged by name per dataset object and process; all are counted


class SkipUnreadable(Dataset):
    """A split of real samples whose ``_load(row)`` may raise :class:`BadSample`: ``data.on_error`` decides.

    Subclasses set ``source``, ``split`` and ``on_error`` and define ``__len__`` and ``_load`` (image,
    captions); this class keeps the raise-or-substitute rule in one place (the ``webdataset`` source
    shares it).
    """

    source: object
    split: str
    on_error: str
    _logged: int = 0

    def _load(self, row: int) -> tuple[torch.Tensor, list[str]]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict:
        n = len(self)
        if not 0 <= index < n:
            raise IndexError(f"index {index} is out of range for the {n} images of the {self.split} split")
        first: BadSample | None = None
        reasons: dict[str, int] = {}
        for tries in range(min(n, MAX_TRIES)):
            row = (index + tries) % n
            try:
                image, captions = self._load(row)
            except BadSample as e:
                if self.on_error == "raise":
                    raise BadSample(f"{e}; pass data.on_error=skip to train past unreadable images", e.reason) from None
                first = first or e
                reasons[e.reason] = reasons.get(e.reason, 0) + 1
                self._log_skip(e)
                continue
            item = {"image": image, "captions": captions, "labels": {}, "index": row, "skipped": tries}
            if reasons:
                item["skip_reasons"] = reasons
            return item
        raise BadSample(
            f"{self.source}: {min(n, MAX_TRIES)} samples in a row from index {index} of the {self.split} split "
            f"are unreadable (the first: {first}); check data.path, or run `tcjepa data validate` on it"
        )

    def _log_skip(self, error: BadSample) -> None:
        self._logged += 1
        if self._logged <= _LOGGED_SKIPS:
            more = "; further skips are only counted" if self._logged == _LOGGED_SKIPS else ""
            log.warning("skipped (data.on_error=skip, counted as data_skipped): %s%s", error, more)


class CaptionedImages(SkipUnreadable):
    """``split`` of an index: its first ``size`` images (all when None), decoded to ``image_size`` squares."""

    def __init__(
        self,
        index: CaptionIndex,
        split: str = "train",
        image_size: int = 64,
        size: int | None = None,
        on_error: str = "raise",
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error={on_error!r}; expected raise or skip")
        index.check(on_error)
        rows = index.rows(split)[:size]
        self.source, self.root, self.split = index.source, index.root, split
        self.images = [index.images[r] for r in rows]
        self.captions = [index.captions[r] for r in rows]
        self.image_size, self.on_error = image_size, on_error
        self._logged = 0

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return f"CaptionedImages({self.source}, split={self.split}, {len(self)} images, on_error={self.on_error})"

    def _load(self, row: int) -> tuple[torch.Tensor, list[str]]:
        return decode_image(self.root / self.images[row], self.image_size), split_captions(self.captions[row])


def captioned_dataset(cfg: Config, fmt: str, split: str, size: int | None) -> CaptionedImages:
    """The ``split`` of ``data.path`` read as ``fmt``; a training split without images is an error."""
    ds = CaptionedImages(read_index(fmt, cfg.data.path), split, cfg.data.image_size, size, cfg.data.on_error)
    if split == "train" and len(ds) == 0:
        raise BadSample(f"{ds.source}: no images in the train split (98% of the images listed, by path hash)")
    return ds
