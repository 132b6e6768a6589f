"""Caption word states computed once, offline, into memory-mapped shards (``text.store``, docs/design.md §4.1).

On a cold start every new sentence runs the frozen text encoder inside the data worker, which costs a
CPU run more than the training step; the per-sentence disk cache helps but reads one file per sentence.
``tcjepa data embed-captions`` runs the encoder once over every sentence of a dataset and writes them
here; training reads them back (``text.store=PATH``) through :class:`~tcjepa.data.captions.CaptionCache`.

A store is a folder:

* ``meta.json``: format, version, encoder name, dim, max_len and dtype (fp32|fp16|int8).
* ``shard-NNNNN.bin``: entries back to back, each starting at a multiple of 16 bytes, each one sentence's
  states as ``state_codec`` packs them (int8: values, then one float32 absmax scale per token).
* ``shard-NNNNN.idx.npy``: a row per entry: ``digest`` = sha1(encoder name + NUL + sentence) (the
  per-sentence disk cache's key), ``offset``, ``n_tokens``, ``code`` (0 fp32, 1 fp16, 2 int8; an fp16
  entry outside float16's range is fp32) and ``crc`` (crc32 of the entry, checked on every read).

A shard is committed by its index: the ``.bin`` is written to a temp file, fsynced and renamed, then the
``.idx.npy`` likewise, then the folder is fsynced. Readers load only shards that have an index, so a kill
at any moment leaves exactly the finished shards; a re-run skips the sentences they hold and overwrites a
``.bin`` left without its index. The index is loaded whole at start (37 bytes per sentence) and searched
by the digest's first 8 bytes; values are read through ``np.memmap``, so worker processes share the pages.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import re
import time
import warnings
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from ..config import Config, ConfigError
from ..models.text import TextEncoder, encoder_name
from .state_codec import CODES, NP_DTYPES, entry_nbytes, pack, unpack

FORMAT, VERSION = "tcjepa-caption-store", 1
INDEX_DTYPE = np.dtype(
    [("digest", "u1", (20,)), ("offset", "<u8"), ("n_tokens", "<u4"), ("code", "u1"), ("crc", "<u4")]
)
_ALIGN = 16
_SHARD = re.compile(r"^shard-(\d{5})\.idx\.npy$")
# fp16 and fp32 stores serve identical training values (the memory cache holds fp16 either way); int8
# states differ from both, so an int8 store only fits text.cache_dtype=int8 and the other way round.
_FAMILY = {"fp32": "float", "fp16": "float", "int8": "int8"}


class StoreError(ValueError):
    """A store that cannot be read or written as asked; the message names the folder and what to do."""


def sentence_key(encoder: str, sentence: str) -> bytes:
    """The 20-byte key of ``sentence`` under encoder ``encoder`` (also the disk cache's file name, in hex)."""
    return hashlib.sha1((encoder + "\0" + sentence).encode("utf-8")).digest()


def _prefix(digests: np.ndarray) -> np.ndarray:
    """First 8 bytes of each (n, 20) digest as a big-endian uint64: what the index is sorted and searched by."""
    return np.ascontiguousarray(digests[:, :8]).view(">u8").ravel().astype(np.uint64)


def _ends(table: np.ndarray, dim: int) -> np.ndarray:
    """End offset of every entry (vectorised ``entry_nbytes``; the index of COCO has 600k rows)."""
    n = table["n_tokens"].astype(np.int64)
    itemsize = np.array([NP_DTYPES[c].itemsize for c in sorted(NP_DTYPES)])[table["code"]]
    return table["offset"].astype(np.int64) + n * dim * itemsize + 4 * n * (table["code"] == CODES["int8"])


def read_meta(path: Path) -> dict:
    meta_path = path / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is not a caption store: {meta_path} is missing") from None
    except (OSError, ValueError) as err:
        raise StoreError(f"{meta_path} is unreadable ({err}); rebuild the store") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise StoreError(f"{meta_path}: not a {FORMAT} version {VERSION} store (found {meta.get('format')!r})")
    return meta


class CaptionStore:
    """Read-only view of a store's finished shards: ``get(sentence)`` -> float32 (n_tokens, dim) or None."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.meta = read_meta(self.path)
        self.encoder, self.dtype = self.meta["encoder"], self.meta["dtype"]
        self.dim, self.max_len = int(self.meta["dim"]), int(self.meta["max_len"])
        self.shards = sorted(int(m.group(1)) for f in os.listdir(self.path) if (m := _SHARD.match(f)))
        tables, owners = [], []
        for n in self.shards:
            table = np.load(self._index_path(n), allow_pickle=False)
            if table.dtype != INDEX_DTYPE or _ends(table, self.dim).max(initial=0) > self._bin_path(n).stat().st_size:
                raise StoreError(
                    f"{self._bin_path(n)} does not match its index; delete {self._index_path(n).name} and "
                    f"re-run `tcjepa data embed-captions ... --out {self.path}` to rebuild that shard"
                )
            tables.append(table)
            owners.append(np.full(len(table), n, dtype=np.int32))
        table = np.concatenate(tables) if tables else np.zeros(0, INDEX_DTYPE)
        prefix = _prefix(table["digest"])
        order = np.argsort(prefix, kind="stable")
        self._table, self._prefix = table[order], prefix[order]
        self._owner = np.concatenate(owners)[order] if owners else np.zeros(0, np.int32)
        self._maps: dict[int, np.ndarray] = {}
        self.errors = 0  # entries whose crc failed: served as misses (re-encoded), never as wrong states

    def _bin_path(self, n: int) -> Path:
        return self.path / f"shard-{n:05d}.bin"

    def _index_path(self, n: int) -> Path:
        return self.path / f"shard-{n:05d}.idx.npy"

    def __len__(self) -> int:
        return len(self._table)

    @property
    def tokens(self) -> int:
        return int(self._table["n_tokens"].sum())

    @property
    def nbytes(self) -> int:
        """Bytes of the stored entries (without alignment padding and index)."""
        return int((_ends(self._table, self.dim) - self._table["offset"].astype(np.int64)).sum())

    def _find(self, sentence: str) -> int | None:
        digest = sentence_key(self.encoder, sentence)
        p = np.uint64(int.from_bytes(digest[:8], "big"))
        i = int(np.searchsorted(self._prefix, p))
        while i < len(self._prefix) and self._prefix[i] == p:  # a shared prefix is astronomically rare
            if self._table["digest"][i].tobytes() == digest:
                return i
            i += 1
        return None

    def __contains__(self, sentence: str) -> bool:
        return self._find(sentence) is not None

    def _shard(self, n: int) -> np.ndarray:
        if n not in self._maps:
            path = self._bin_path(n)
            empty = path.stat().st_size == 0  # np.memmap refuses empty files (shards of token-less sentences)
            self._maps[n] = np.zeros(0, np.uint8) if empty else np.memmap(path, dtype=np.uint8, mode="r")
        return self._maps[n]

    def get(self, sentence: str) -> torch.Tensor | None:
        """The stored states as float32, or None when the sentence is absent (or its entry fails its crc)."""
        i = self._find(sentence)
        if i is None:
            return None
        row = self._table[i]
        code, n_tok, start = int(row["code"]), int(row["n_tokens"]), int(row["offset"])
        buf = self._shard(int(self._owner[i]))[start : start + entry_nbytes(code, n_tok, self.dim)]
        if zlib.crc32(buf) != int(row["crc"]):
            self.errors += 1
            if self.errors == 1:
                warnings.warn(f"caption store {self.path}: an entry fails its checksum; re-encoding it", stacklevel=2)
            return None
        return unpack(buf, code, n_tok, self.dim)


def store_problem(meta: dict, name: str, dim: int | None, max_len: int, cache_dtype: str) -> str | None:
    """Why a store built with ``meta`` cannot serve this text encoder and cache dtype, or None if it can."""
    if meta["encoder"] != name:
        return f"it was built with text encoder {meta['encoder']!r}, but this config's is {name!r}"
    if int(meta["max_len"]) != max_len:
        return f"it was built with text.max_len={meta['max_len']}, but this config has text.max_len={max_len}"
    if dim is not None and int(meta["dim"]) != dim:
        return f"it holds {meta['dim']}-d states, but the text encoder gives {dim}-d ones"
    if _FAMILY[meta["dtype"]] != _FAMILY[cache_dtype]:
        return (
            f"it holds {meta['dtype']} states, but text.cache_dtype={cache_dtype} (sentences missing from it would "
            f"be encoded as {cache_dtype}, so batches would mix precisions); set text.cache_dtype={meta['dtype']} "
            f"or rebuild it with --dtype {cache_dtype}"
        )
    return None


def _store_error(path: str, why: str) -> ConfigError:
    return ConfigError(
        f"config key 'text.store'={path!r}: {why}; build it for this config with "
        f"`tcjepa data embed-captions CONFIG [key=value ...] --out {path}`"
    )


def check_store_config(cfg: Config) -> None:
    """At start, without loading the encoder: ``text.store`` must be a store that fits ``text.*``."""
    t = cfg.text
    if not t.store:
        return
    try:
        meta = read_meta(Path(t.store))
    except (FileNotFoundError, StoreError) as err:
        raise _store_error(t.store, str(err)) from None
    name = encoder_name(t.encoder, t.max_len, t.keep_special, t.hashed_dim)
    why = store_problem(meta, name, None, t.max_len, t.cache_dtype)
    if why:
        raise _store_error(t.store, why)


def open_store_for(cfg: Config, encoder: TextEncoder) -> CaptionStore:
    """The store ``text.store`` names, checked against the encoder actually built."""
    check_store_config(cfg)
    store = CaptionStore(cfg.text.store)
    why = store_problem(store.meta, encoder.name, encoder.dim, cfg.text.max_len, cfg.text.cache_dtype)
    if why:
        raise _store_error(cfg.text.store, why)
    return store


def _write_durable(path: Path, data: bytes) -> None:
    """Write via a temp file, fsync and rename: ``path`` is either absent, the old file or complete."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StoreWriter:
    """Appends entries to a store, committing a shard every ``shard_bytes``; one writer per store (locked)."""

    def __init__(self, path: str | Path, encoder: str, dim: int, max_len: int, dtype: str, shard_bytes: int) -> None:
        if dtype not in CODES:
            raise ValueError(f"caption store dtype {dtype!r}; expected one of {', '.join(CODES)}")
        self.path, self.dtype, self.shard_bytes = Path(path), dtype, max(1, int(shard_bytes))
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.path / ".lock", "w")  # noqa: SIM115 (held until close)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise StoreError(f"{self.path}: another embed-captions is writing to this store") from None
        meta = dict(format=FORMAT, version=VERSION, encoder=encoder, dim=dim, max_len=max_len, dtype=dtype)
        if (self.path / "meta.json").exists():
            old = read_meta(self.path)
            if any(old[k] != meta[k] for k in ("encoder", "dim", "max_len", "dtype")):
                self._lock.close()
                raise StoreError(
                    f"{self.path} holds states of encoder {old['encoder']!r} (dim {old['dim']}, max_len "
                    f"{old['max_len']}, {old['dtype']}); this run would add {encoder!r} (dim {dim}, max_len "
                    f"{max_len}, {dtype}): choose another --out, or the store's settings"
                )
        else:
            _write_durable(self.path / "meta.json", (json.dumps(meta, indent=2) + "\n").encode())
            _fsync_dir(self.path)
        self.store = CaptionStore(self.path)
        self.encoder, self._next = encoder, max(self.store.shards, default=-1) + 1
        self._buf, self._rows = bytearray(), []
        self.written = dict(sentences=0, tokens=0, bytes=0, shards=0)

    def __contains__(self, sentence: str) -> bool:
        return sentence in self.store

    def add(self, sentence: str, states: torch.Tensor) -> None:
        code, payload = pack(states.detach().float().cpu(), self.dtype)
        self._buf.extend(b"\0" * (-len(self._buf) % _ALIGN))
        self._rows.append((sentence_key(self.encoder, sentence), len(self._buf), states.shape[0], code, payload))
        self._buf.extend(payload)
        if len(self._buf) >= self.shard_bytes:
            self.flush()

    def flush(self) -> None:
        """Commit the pending entries as the next shard (values first, then the index that commits them)."""
        if not self._rows:
            return
        table = np.zeros(len(self._rows), INDEX_DTYPE)
        for i, (digest, offset, n_tok, code, payload) in enumerate(self._rows):
            table[i] = (np.frombuffer(digest, np.uint8), offset, n_tok, code, zlib.crc32(payload))
        index = io.BytesIO()
        np.save(index, table, allow_pickle=False)
        _write_durable(self.store._bin_path(self._next), bytes(self._buf))
        _write_durable(self.store._index_path(self._next), index.getvalue())
        _fsync_dir(self.path)
        self.written["sentences"] += len(table)
        self.written["tokens"] += int(table["n_tokens"].sum())
        self.written["bytes"] += sum(len(r[4]) for r in self._rows)
        self.written["shards"] += 1
        self._next += 1
        self._buf, self._rows = bytearray(), []

    def close(self) -> None:
        """Release the lock; entries not yet flushed are dropped (a re-run encodes them again)."""
        self._lock.close()


def build_store(
    encoder: TextEncoder,
    sentences: Iterable[str],
    out: str | Path,
    dtype: str,
    shard_bytes: int = 64 << 20,
    chunk: int = 256,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Encode every sentence ``out`` does not hold yet and commit it in shards; returns counts and seconds.

    ``progress(n)`` is called after each chunk of ``n`` sentences is encoded (an exception from it stops the
    build like a kill would: finished shards stay, the pending one is dropped).
    """
    t0 = time.perf_counter()
    writer = StoreWriter(out, encoder.name, encoder.dim, encoder.max_len, dtype, shard_bytes)
    try:
        unique = list(dict.fromkeys(sentences))
        todo = [s for s in unique if s not in writer]
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            states = encoder.encode(part)
            if len(states) != len(part) or any(s.ndim != 2 or s.shape[1] != encoder.dim for s in states):
                raise ValueError(f"text encoder {encoder.name!r} returned malformed states for a chunk of {len(part)}")
            for sentence, s in zip(part, states):
                writer.add(sentence, s)
            if progress is not None:
                progress(len(part))
        writer.flush()
    finally:
        writer.close()
    store = CaptionStore(out)
    return {
        "sentences": len(unique),
        "already_stored": len(unique) - len(todo),
        "encoded": len(todo),
        **{f"written_{k}": v for k, v in writer.written.items()},
        "store_sentences": len(store),
        "store_tokens": store.tokens,
        "store_bytes": store.nbytes,
        "store_shards": len(store.shards),
        "seconds": time.perf_counter() - t0,
    }
