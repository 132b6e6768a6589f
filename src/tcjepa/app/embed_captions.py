"""``tcjepa data embed-captions``: run the frozen text encoder once over a dataset's sentences into a store.

Which sentences: every usable caption (stripped, non-empty, as training samples them) of every image of
the chosen splits, in dataset order, each once. Captions are read without decoding or drawing images:
generated scenes (``shapes``, ``fashion-scenes``) give them from their layout alone, real sources from
their index. Generated datasets are unbounded in principle; here the train split has ``data.train_size``
scenes and the others their default size, the same scenes training and the monitors draw.
"""

from __future__ import annotations

from tqdm import tqdm

from ..config import Config
from ..data.caption_store import build_store
from ..data.captioned import CaptionedImages
from ..data.captions import usable_captions
from ..data.sentences import split_captions
from ..data.sources import build_dataset
from ..models.text import build_text_encoder


def _captions(ds: object, i: int) -> list[str]:
    if hasattr(ds, "scene"):  # shapes, fashion-scenes: the layout names them, no pixels needed
        return list(ds.scene(i).captions)
    if isinstance(ds, CaptionedImages):  # the index holds them; the images stay on disk
        return split_captions(ds.captions[i])
    return ds[i]["captions"]


def dataset_sentences(cfg: Config, splits: list[str], progress: bool = False) -> tuple[list[str], dict[str, int]]:
    """The distinct usable sentences of ``splits`` in order, and the number of images per split."""
    seen: dict[str, None] = {}
    images = {}
    for split in splits:
        ds = build_dataset(cfg, split)
        images[split] = len(ds)
        for i in tqdm(range(len(ds)), desc=f"captions of {split}", unit="img", disable=not progress, leave=False):
            seen.update(dict.fromkeys(usable_captions(_captions(ds, i))))
    return list(seen), images


def embed_captions(
    cfg: Config, out: str, dtype: str, splits: list[str], shard_mb: float = 64, progress: bool = True
) -> dict:
    """Build (or complete) the store ``out`` for ``cfg``'s dataset and text encoder; returns the summary."""
    sentences, images = dataset_sentences(cfg, splits, progress)
    t = cfg.text
    encoder = build_text_encoder(t.encoder, max_len=t.max_len, keep_special=t.keep_special, dim=t.hashed_dim)
    with tqdm(total=len(sentences), desc="embedding", unit="sent", disable=not progress, dynamic_ncols=True) as bar:
        shard_bytes = int(shard_mb * (1 << 20))
        summary = build_store(encoder, sentences, out, dtype, shard_bytes=shard_bytes, progress=bar.update)
    return {"store": str(out), "encoder": encoder.name, "dtype": dtype, "images": images, **summary}


def format_summary(s: dict) -> str:
    per_token = s["store_bytes"] / max(1, s["store_tokens"])
    images = ", ".join(f"{k} {v}" for k, v in s["images"].items())
    return "\n".join(
        [
            f"{s['store']} ({s['encoder']}, {s['dtype']})",
            f"  sentences  {s['sentences']} distinct in {images} images: {s['encoded']} encoded now, "
            f"{s['already_stored']} already stored",
            f"  written    {s['written_sentences']} sentences, {s['written_tokens']} tokens, "
            f"{s['written_bytes']} bytes in {s['written_shards']} shards, {s['seconds']:.1f} s",
            f"  store      {s['store_sentences']} sentences, {s['store_tokens']} tokens, {s['store_bytes']} bytes "
            f"({per_token:.0f} per token) in {s['store_shards']} shards",
            f"train with: text.store={s['store']}",
        ]
    )
