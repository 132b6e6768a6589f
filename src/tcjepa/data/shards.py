"""WebDataset tar shards as a map-style dataset: the ``webdataset`` entry of ``DATASETS`` (docs/design.md §4.12).

The shards are indexed once (``tar_index.py``); a sample is then read by seeking to its members. Serving
samples by position, instead of streaming tars through a shuffle buffer, keeps this source inside the
stream's contract (the batch of step s is a pure function of (seed, s)): ranks, loader workers and
``--resume`` are exact by construction, and fewer shards than workers cannot leave a worker without data.

The order of an epoch (:meth:`ShardSamples.epoch_order`, which the stream uses instead of its own
permutation) is drawn from (seed, epoch):

* default: the shard order is shuffled, then samples are shuffled within windows of ``data.shard_window``
  consecutive shards of that order (0: across all shards; a window keeps reads within a few files, for
  network or spinning disks);
* ``data.resampled=true``: a virtual epoch of ``data.epoch_samples`` draws with replacement (0: as many as
  the split holds); each draw picks a source by its weight (``PATTERN::W``; unweighted: by its size), then
  a sample of it uniformly.

Splits: a sample is in train, val or test by the SHA-1 of its key (98/1/1, as for jsonl), so a held-out
split needs no second set of shards and survives re-sharding.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import torch

from ..config import Config, ConfigError
from .caption_index import SPLITS, split_of
from .captioned import SkipUnreadable
from .decode import BadSample, decode_image
from .sentences import split_captions
from .shard_paths import ShardSource, parse_shard_path
from .tar_index import ShardIndex, shard_index

log = logging.getLogger("tcjepa.data")

_SHOWN = 5  # problems quoted in a message; all are counted


def parse_captions(json_bytes: bytes | None, txt_bytes: bytes | None, name: str) -> list[str]:
    """A sample's captions: ``.json``'s ``captions`` list and/or ``caption`` string when it has either, else
    ``.txt``'s lines (each cut into sentences later); none is a captionless sample. Bad text is a BadSample."""
    if json_bytes is not None:
        try:
            entry = json.loads(json_bytes.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BadSample(f"{name}.json: not UTF-8 JSON ({e})", "bad_captions") from None
        if isinstance(entry, dict) and ("captions" in entry or "caption" in entry):
            captions, single = entry.get("captions", []), entry.get("caption")
            if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
                raise BadSample(f'{name}.json: "captions" must be a list of strings', "bad_captions")
            if single is not None and not isinstance(single, str):
                raise BadSample(f'{name}.json: "caption" must be a string', "bad_captions")
            return ([single] if single is not None else []) + captions
    if txt_bytes is not None:  # no captions in the .json (e.g. img2dataset's metadata): the .txt has them
        try:
            text = txt_bytes.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadSample(
                f"{name}.txt: not UTF-8 (byte 0x{txt_bytes[e.start]:02x} at offset {e.start})", "bad_captions"
            ) from None
        return [line for line in text.splitlines() if line.strip()]
    return []


def _read(f, span: tuple[int, int]) -> bytes | None:
    offset, size = span
    if offset < 0:
        return None
    f.seek(offset)
    return f.read(size)


def read_sample(index: ShardIndex, i: int) -> tuple[bytes, list[str], str]:
    """(image bytes, raw captions, name) of sample ``i`` of a shard; a shard changed since indexing is a
    BadSample (its index is then stale: the cache notices on the next start)."""
    name = f"{index.path}:{index.keys[i]}"
    try:
        with open(index.path, "rb") as f:
            image, js, txt = (_read(f, span) for span in (index.image[i], index.json[i], index.txt[i]))
    except OSError as e:
        raise BadSample(f"{name}: cannot read the shard ({e})", "shard") from None
    if len(image) != index.image[i][1]:
        raise BadSample(f"{name}: the shard is shorter than its index says (changed since it was indexed?)", "shard")
    return image, parse_captions(js, txt, name), name


class ShardSamples(SkipUnreadable):
    """The ``split`` of the sources' samples, ``size`` at most, decoded to ``image_size`` squares."""

    def __init__(
        self,
        sources: list[ShardSource],
        split: str = "train",
        image_size: int = 64,
        size: int | None = None,
        on_error: str = "raise",
        resampled: bool = False,
        epoch_samples: int = 0,
        shard_window: int = 0,
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error={on_error!r}; expected raise or skip")
        if split not in SPLITS:
            raise ValueError(f"split={split!r}: shards have the splits {', '.join(SPLITS)}")
        if any(s.weight is not None for s in sources) and not resampled:
            raise ConfigError(
                "data.path gives source weights (PATTERN::W), which only resampled mode uses: pass "
                "data.resampled=true, or drop the weights to read every sample once per epoch"
            )
        self.source = ",".join(s.pattern for s in sources)
        self.split, self.image_size, self.on_error = split, image_size, on_error
        self.resampled, self.epoch_samples, self.shard_window = resampled, epoch_samples, shard_window
        self.shards = [shard_index(p) for s in sources for p in s.shards]
        self.problems = [p for idx in self.shards for p in idx.problems]
        self._check_problems()
        # rows: (shard number, sample in shard) of this split, shard by shard, in pattern order
        rows = [(k, i) for k, idx in enumerate(self.shards) for i, key in enumerate(idx.keys) if split_of(key) == split]
        rows = rows[:size]
        self.rows = np.array(rows, dtype=np.int64).reshape(-1, 2)
        first_shard = np.cumsum([0] + [len(s.shards) for s in sources])
        self.row_source = np.searchsorted(first_shard, self.rows[:, 0], side="right") - 1
        self.weights = [s.weight for s in sources]
        self._logged = 0

    def _check_problems(self) -> None:
        if not self.problems:
            return
        shown = "\n  ".join(self.problems[:_SHOWN])
        more = f"\n  ... and {len(self.problems) - _SHOWN} more" if len(self.problems) > _SHOWN else ""
        head = f"{len(self.problems)} problem(s) in the shards of {self.source}"
        if self.on_error == "raise":
            raise BadSample(
                f"{head}:\n  {shown}{more}\nFix the shards, or pass data.on_error=skip to leave the "
                "members named out (they are counted); `tcjepa data validate` lists every problem."
            )
        log.warning("%s, left out (data.on_error=skip):\n  %s%s", head, shown, more)

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"ShardSamples({self.source}, split={self.split}, {len(self)} samples in {len(self.shards)} shards)"

    def _load(self, row: int) -> tuple[torch.Tensor, list[str]]:
        k, i = self.rows[row]
        image, captions, name = read_sample(self.shards[k], int(i))
        return decode_image(image, self.image_size, name=name), split_captions(captions)

    @property
    def epoch_length(self) -> int:
        """Positions per epoch: the split's size, or ``data.epoch_samples`` in resampled mode."""
        return (self.epoch_samples or len(self)) if self.resampled else len(self)

    def epoch_order(self, seed: int, epoch: int) -> np.ndarray:
        """The rows of epoch ``epoch``, one per position: a pure function of (seed, epoch) and the index."""
        rng = np.random.default_rng([seed, epoch, 17])
        if self.resampled:
            return self._resampled_order(rng)
        order = rng.permutation(len(self.shards))
        if not self.shard_window or self.shard_window >= len(order):
            return rng.permutation(len(self))
        # rows are grouped by shard, in shard order: shard k's rows are bounds[k]:bounds[k + 1]
        bounds = np.searchsorted(self.rows[:, 0], np.arange(len(self.shards) + 1))
        out = []
        for start in range(0, len(order), self.shard_window):
            window = [np.arange(bounds[k], bounds[k + 1]) for k in order[start : start + self.shard_window]]
            out.append(rng.permutation(np.concatenate(window)))
        return np.concatenate(out)

    def _resampled_order(self, rng: np.random.Generator) -> np.ndarray:
        by_source = [np.flatnonzero(self.row_source == s) for s in range(len(self.weights))]
        sizes = np.array([len(r) for r in by_source], dtype=np.float64)
        w = np.array(self.weights, dtype=np.float64) if self.weights[0] is not None else sizes
        w = np.where(sizes > 0, w, 0.0)
        if w.sum() <= 0:
            raise BadSample(f"{self.source}: no samples in the {self.split} split to resample from")
        picks = rng.choice(len(w), size=self.epoch_length, p=w / w.sum())
        out = np.empty(self.epoch_length, dtype=np.int64)
        for s, rows in enumerate(by_source):
            at = np.flatnonzero(picks == s)
            if len(at):
                out[at] = rows[rng.integers(0, len(rows), size=len(at))]
        return out


def shard_dataset(cfg: Config, split: str, size: int | None) -> ShardSamples:
    """The ``split`` of ``data.path``'s shards; a training split without samples is an error."""
    try:
        sources = parse_shard_path(cfg.data.path)
    except ValueError as e:  # the syntax of data.path: a config error, not a bad file
        raise ConfigError(str(e)) from None
    d = cfg.data
    resampled = d.resampled and split == "train"  # held-out splits are read once, in order
    ds = ShardSamples(sources, split, d.image_size, size, d.on_error, resampled, d.epoch_samples, d.shard_window)
    if split == "train" and len(ds) == 0:
        raise BadSample(f"{ds.source}: no samples in the train split (98% of the keys, by key hash)")
    return ds
