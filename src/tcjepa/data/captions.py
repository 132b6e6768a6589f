"""Caption sampling and a caption -> word-state cache for TC-JEPA.

Every training step needs the frozen text encoder's word states for a few captions per image. Captions
repeat across epochs (COCO has 5 per image), so re-running the encoder each time would dominate a CPU run;
:class:`CaptionCache` computes each sentence once and serves it from memory (and optionally disk).

Precision: the memory cache stores float16, which halves memory; the round-trip error is at most
2^-11 relative (about 5e-4) per value. A tensor with values outside float16's range (|x| > 65504) is stored
in float32 instead, so nothing becomes inf. With ``disk_dtype="int8"`` memory holds the *dequantized* int8
values, so a sentence gives bit-identical states whether it was just encoded or re-read from disk later.

Disk format (``disk_dir``): one small file per sentence at ``<disk_dir>/<k[:2]>/<k>.tcc`` with
``k = sha1(encoder.name + "\\0" + sentence)`` (256 sub-folders keep directories small; the encoder name in
the key lets encoders share a folder). A file is: header ``b"TCJC"``, version byte, dtype byte (0 fp32,
1 fp16, 2 int8), uint32 n_tokens, uint32 dim (little-endian); the values (row-major); for int8 one float32
absmax/127 scale per token; then a crc32 of everything before it. Files are written to a temp file and
moved into place with ``os.replace`` (atomic), so a crash never leaves a half-written entry under the real
name; a file that fails its checks anyway is counted in ``stats["disk_errors"]``, re-encoded and rewritten.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
import warnings
import zlib
from collections import OrderedDict
from pathlib import Path

import torch

from tcjepa.config import Config
from tcjepa.models.text import TextEncoder

from .caption_store import CaptionStore, open_store_for
from .state_codec import CODES, NP_DTYPES, dequantize_int8, entry_nbytes, pack, quantize_int8, to_storage, unpack

__all__ = ["CaptionCache", "dequantize_int8", "quantize_int8", "sample_captions", "usable_captions"]

_HEADER = struct.Struct("<4sBBII")
_MAGIC, _VERSION = b"TCJC", 1


def usable_captions(captions: list[str]) -> list[str]:
    """The captions an image can contribute: stripped, non-empty, each distinct sentence once, in order."""
    return list(dict.fromkeys(c.strip() for c in captions if c and c.strip()))


def sample_captions(captions: list[str], n: int, generator: torch.Generator) -> list[str]:
    """Draw up to ``n`` distinct captions without replacement, in random order.

    Empty/whitespace captions are ignored and duplicates collapse to one, so an image never contributes the
    same caption twice; with fewer than ``n`` available all are returned (never padded). Captions come back
    stripped of surrounding whitespace, which the tokenizers ignore anyway and which improves cache hits.
    """
    if isinstance(captions, str):
        raise TypeError("sample_captions() takes a list of captions for one image, got a single str.")
    if n < 0:
        raise ValueError(f"sample_captions: n={n}; expected the number of captions per image, >= 0.")
    unique = usable_captions(captions)
    if n == 0 or not unique:
        return []
    order = torch.randperm(len(unique), generator=generator)[:n].tolist()
    return [unique[i] for i in order]


class CaptionCache:
    """Serve a frozen encoder's word states per sentence from an LRU memory cache and an optional disk cache.

    One cache belongs to one encoder; memory keys are the sentences as given. ``stats`` counts ``hits``
    (served from memory, including repeats within one call), ``misses`` (sentences sent to the encoder),
    ``disk_hits``, ``disk_errors`` (unreadable/corrupt files or failed writes), ``entries`` and ``bytes``
    (tensor bytes held in memory, kept <= ``max_bytes``). Meant for the main process: DataLoader worker
    processes would each hold a separate memory cache (the disk cache is safe to share).

    With a ``store`` (a pre-computed :class:`~tcjepa.data.caption_store.CaptionStore`, ``text.store``), a
    memory miss is looked up there before the disk cache and the encoder; ``store_hits`` and
    ``store_misses`` count the outcomes, so a sentence the store lacks is encoded and counted, never skipped.
    """

    def __init__(
        self,
        encoder: TextEncoder,
        max_bytes: int = 1 << 30,
        disk_dir: str | None = None,
        disk_dtype: str = "fp16",
        store: CaptionStore | None = None,
    ) -> None:
        if disk_dtype not in CODES:
            raise ValueError(f"CaptionCache disk_dtype={disk_dtype!r}; expected one of {sorted(CODES)}.")
        if max_bytes < 0:
            raise ValueError(f"CaptionCache max_bytes={max_bytes}; expected >= 0 (0 disables the memory cache).")
        self.encoder, self.max_bytes, self.disk_dtype = encoder, int(max_bytes), disk_dtype
        self.disk_dir = Path(disk_dir) if disk_dir is not None else None
        self.store = store
        self._mem: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._warned_write = False
        self.stats: dict[str, int] = dict(
            hits=0, misses=0, entries=0, bytes=0, disk_hits=0, disk_errors=0, store_hits=0, store_misses=0
        )

    # ----------------------------------------------------------------- memory
    def _remember(self, sentence: str, stored: torch.Tensor) -> None:
        size = stored.numel() * stored.element_size()
        old = self._mem.pop(sentence, None)
        if old is not None:
            self.stats["bytes"] -= old.numel() * old.element_size()
        if size > self.max_bytes:  # would evict everything and still not fit
            self.stats["entries"] = len(self._mem)
            return
        self._mem[sentence] = stored
        self.stats["bytes"] += size
        while self.stats["bytes"] > self.max_bytes:
            _, evicted = self._mem.popitem(last=False)
            self.stats["bytes"] -= evicted.numel() * evicted.element_size()
        self.stats["entries"] = len(self._mem)

    def __len__(self) -> int:
        return len(self._mem)

    def __contains__(self, sentence: str) -> bool:
        return sentence in self._mem

    # ------------------------------------------------------------------- disk
    def disk_path(self, sentence: str) -> Path:
        """Where ``sentence``'s states live on disk (only meaningful with ``disk_dir``)."""
        if self.disk_dir is None:
            raise ValueError("CaptionCache.disk_path: this cache has no disk_dir.")
        key = hashlib.sha1((self.encoder.name + "\0" + sentence).encode("utf-8")).hexdigest()
        return self.disk_dir / key[:2] / f"{key}.tcc"

    def _disk_read(self, sentence: str) -> torch.Tensor | None:
        """States from disk as float32, or None when absent or corrupt (corrupt is counted)."""
        path = self.disk_path(sentence)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError:
            self.stats["disk_errors"] += 1
            return None
        try:
            return self._decode(blob)
        except ValueError:
            self.stats["disk_errors"] += 1
            return None

    def _decode(self, blob: bytes) -> torch.Tensor:
        if len(blob) < _HEADER.size + 4 or zlib.crc32(blob[:-4]) != struct.unpack("<I", blob[-4:])[0]:
            raise ValueError("truncated or checksum mismatch")
        magic, version, code, n_tok, dim = _HEADER.unpack_from(blob)
        if magic != _MAGIC or version != _VERSION or code not in NP_DTYPES or dim != self.encoder.dim:
            raise ValueError("bad header")
        if len(blob) != _HEADER.size + entry_nbytes(code, n_tok, dim) + 4:
            raise ValueError("size mismatch")
        states = unpack(memoryview(blob)[_HEADER.size : -4], code, n_tok, dim)
        if not torch.isfinite(states).all():
            raise ValueError("non-finite values")
        return states

    def _encode_file(self, states: torch.Tensor) -> bytes:
        code, payload = pack(states, self.disk_dtype)
        body = _HEADER.pack(_MAGIC, _VERSION, code, states.shape[0], states.shape[1]) + payload
        return body + struct.pack("<I", zlib.crc32(body))

    def _disk_write(self, sentence: str, states: torch.Tensor) -> None:
        path = self.disk_path(sentence)
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem[:8], suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                fh.write(self._encode_file(states))
            os.replace(tmp, path)
        except OSError as err:
            self.stats["disk_errors"] += 1
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
            if not self._warned_write:  # a full or read-only disk must not stop training; say it once
                warnings.warn(f"CaptionCache: cannot write {path} ({err}); continuing without it.", stacklevel=3)
                self._warned_write = True

    # ------------------------------------------------------------------ public
    def _lookup(self, sentences: list[str]) -> list[torch.Tensor]:
        """Stored tensors (float16, or float32 on overflow) per sentence; misses are encoded in one call."""
        if isinstance(sentences, str):
            raise TypeError("CaptionCache.encode() takes a list of sentences, got a single str.")
        found: dict[str, torch.Tensor] = {}
        missing: list[str] = []
        disk_hits = store_hits = 0
        for s in dict.fromkeys(sentences):
            hit = self._mem.get(s)
            if hit is not None:
                self._mem.move_to_end(s)
                found[s] = hit
                continue
            if self.store is not None:  # the store is read like the disk cache: same dtype -> same values
                states = self.store.get(s)
                if states is not None:
                    store_hits += 1
                    found[s] = to_storage(states)
                    self._remember(s, found[s])
                    continue
                self.stats["store_misses"] += 1
            states = self._disk_read(s) if self.disk_dir is not None else None
            if states is not None:
                disk_hits += 1
                found[s] = to_storage(states)
                self._remember(s, found[s])
            else:
                missing.append(s)
        if missing:
            fresh = self.encoder.encode(missing)
            if len(fresh) != len(missing):
                raise ValueError(
                    f"text encoder {self.encoder.name!r} returned {len(fresh)} tensors for {len(missing)} "
                    "sentences; encode() must return one (n_tokens, dim) tensor per sentence."
                )
            for s, states in zip(missing, fresh):
                if states.ndim != 2 or states.shape[1] != self.encoder.dim:
                    raise ValueError(
                        f"text encoder {self.encoder.name!r} returned shape {tuple(states.shape)} for {s!r}; "
                        f"expected (n_tokens, {self.encoder.dim})."
                    )
                states = states.detach().float().cpu()
                if self.disk_dtype == "int8":  # memory sees what a later disk read would see
                    states = dequantize_int8(*quantize_int8(states))
                found[s] = to_storage(states)
                self._remember(s, found[s])
                if self.disk_dir is not None:
                    self._disk_write(s, states)
        self.stats["misses"] += len(missing)
        self.stats["disk_hits"] += disk_hits
        self.stats["store_hits"] += store_hits
        self.stats["hits"] += len(sentences) - len(missing) - disk_hits - store_hits
        return [found[s] for s in sentences]

    def encode(self, sentences: list[str]) -> list[torch.Tensor]:
        """Like ``encoder.encode`` (float32 copies), but served from the cache where possible."""
        return [t.to(torch.float32, copy=True) for t in self._lookup(sentences)]

    def batch(self, captions: list[list[str]], n: int) -> dict[str, torch.Tensor]:
        """Pad the captions of B images into dense tensors for the predictor.

        ``captions[b]`` holds at most ``n`` captions (sample them first with :func:`sample_captions`); a
        missing, empty or token-less caption is absent. Returns ``text`` (B, n, S, dim) float32,
        ``text_mask`` (B, n, S) bool (True = real token) and ``caption_mask`` (B, n) bool (True = present),
        where S is the longest caption in this batch (at least 1), so padding is trimmed per batch.
        """
        if n < 1:
            raise ValueError(f"CaptionCache.batch: n={n}; expected captions per image >= 1.")
        sentences: list[str] = []
        slots: list[int] = []
        for b, caps in enumerate(captions):
            if isinstance(caps, str):
                raise TypeError(f"CaptionCache.batch: captions[{b}] is a str; expected a list of captions.")
            if len(caps) > n:
                raise ValueError(
                    f"CaptionCache.batch: image {b} has {len(caps)} captions but n={n}; "
                    "draw at most n with sample_captions() first."
                )
            for j, cap in enumerate(caps):
                if cap and cap.strip():
                    sentences.append(cap)
                    slots.append(b * n + j)
        states = self._lookup(sentences)
        n_slots, dim = len(captions) * n, self.encoder.dim
        lens = torch.tensor([t.shape[0] for t in states], dtype=torch.long)
        width = max(1, int(lens.max()) if len(states) else 1)
        lengths = torch.zeros(n_slots, dtype=torch.long)
        text = torch.zeros(n_slots * width, dim)
        if len(states) and int(lens.sum()) > 0:
            slot_t = torch.tensor(slots, dtype=torch.long)
            lengths[slot_t] = lens
            total = int(lens.sum())
            # Destination row of every token: its slot's first row + its position within the caption.
            offsets = torch.arange(total) - torch.repeat_interleave(torch.cumsum(lens, 0) - lens, lens)
            rows = torch.repeat_interleave(slot_t * width, lens) + offsets
            text.index_copy_(0, rows, torch.cat(states).float())  # cat promotes fp16/fp32 mixes
        text_mask = torch.arange(width)[None, :] < lengths[:, None]
        return {
            "text": text.view(len(captions), n, width, dim),
            "text_mask": text_mask.view(len(captions), n, width),
            "caption_mask": (lengths > 0).view(len(captions), n),
        }


def text_dim_for(cfg: Config) -> int:
    """Width of the text encoder's word states, without loading weights where it is known."""
    if cfg.text.encoder == "minilm":
        return 384
    if cfg.text.encoder == "hashed":
        return cfg.text.hashed_dim
    return build_caption_cache(cfg).encoder.dim


def build_caption_cache(cfg: Config) -> CaptionCache:
    from tcjepa.models.text import build_text_encoder

    t = cfg.text
    encoder = build_text_encoder(t.encoder, max_len=t.max_len, keep_special=t.keep_special, dim=t.hashed_dim)
    store = open_store_for(cfg, encoder) if t.store else None
    return CaptionCache(
        encoder, max_bytes=t.cache_mb << 20, disk_dir=t.cache_dir, disk_dtype=t.cache_dtype, store=store
    )
