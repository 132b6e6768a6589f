"""The caption store: bit-exact against the cache, resumable after a kill, checked against the config, and
read by training with every sentence it lacks encoded and counted."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tcjepa.app.cli import main
from tcjepa.config import ConfigError, load_config
from tcjepa.data.batch import text_spec
from tcjepa.data.caption_store import CaptionStore, StoreError, StoreWriter, build_store, check_store_config
from tcjepa.data.captions import CaptionCache, build_caption_cache
from tcjepa.data.stream import PretrainStream
from tcjepa.models.text import HashedEncoder, build_text_encoder, encoder_name

SENTENCES = [
    "a red circle left of a blue square.",
    "two green triangles.",
    "!!!",  # no word tokens: stored as an empty entry, still a hit
    "a large yellow star on a striped background.",
    "the blue square is above the red circle.",
    "one small purple cross.",
    "a tiny orange ring near the top edge of the picture.",
]


class _Loud(HashedEncoder):
    """Hashed states, one sentence scaled past float16's range: an fp16 store must keep it as fp32."""

    def encode(self, sentences: list[str]) -> list[torch.Tensor]:
        out = super().encode(sentences)
        return [t * 1e5 if s.startswith("two") else t for s, t in zip(sentences, out)]


def _files(path: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(path.iterdir()) if f.name != ".lock"}


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "int8"])
def test_store_states_equal_the_cache_bit_for_bit(tmp_path: Path, dtype: str) -> None:
    enc = _Loud(dim=16)
    summary = build_store(enc, SENTENCES, tmp_path / "s", dtype, shard_bytes=600, chunk=3)
    assert summary["encoded"] == summary["store_sentences"] == len(SENTENCES) and summary["store_shards"] > 1
    store = CaptionStore(tmp_path / "s")
    assert all(s in store for s in SENTENCES) and "not stored" not in store
    direct = CaptionCache(enc, disk_dtype=dtype).encode(SENTENCES)
    served = CaptionCache(enc, disk_dtype=dtype, store=store)
    for a, b in zip(direct, served.encode(SENTENCES)):
        assert torch.equal(a, b)
    assert served.stats["store_hits"] == len(SENTENCES) and served.stats["misses"] == 0
    loud = store.get("two green triangles.")
    assert torch.isfinite(loud).all() and loud.abs().max() > 65504  # kept as fp32, not inf
    if dtype != "int8":  # the error report's premise: fp16 rounds, fp32 is exact
        exact = enc.encode(SENTENCES[:1])[0]
        assert torch.equal(store.get(SENTENCES[0]), exact) == (dtype == "fp32")


def test_interrupted_build_resumes_to_the_uninterrupted_store(tmp_path: Path) -> None:
    enc = HashedEncoder(dim=8)
    sentences = [f"scene {i} has {i % 4} red circles and {i % 3} squares." for i in range(40)]
    build_store(enc, sentences, tmp_path / "full", "int8", shard_bytes=700, chunk=4)

    def kill_after(n: int):
        done = [0]

        def progress(k: int) -> None:
            done[0] += k
            if done[0] >= n:
                raise KeyboardInterrupt  # as a kill would: the pending shard is lost

        return progress

    with pytest.raises(KeyboardInterrupt):
        build_store(enc, sentences, tmp_path / "cut", "int8", shard_bytes=700, chunk=4, progress=kill_after(22))
    partial = CaptionStore(tmp_path / "cut")
    assert 0 < len(partial) < 22  # finished shards only
    (tmp_path / "cut" / f"shard-{max(partial.shards) + 1:05d}.bin").write_bytes(b"half-written")  # no index
    summary = build_store(enc, sentences, tmp_path / "cut", "int8", shard_bytes=700, chunk=4)
    assert summary["already_stored"] == len(partial) and summary["encoded"] == 40 - len(partial)
    assert _files(tmp_path / "cut") == _files(tmp_path / "full")
    again = build_store(enc, sentences, tmp_path / "cut", "int8", shard_bytes=700, chunk=4)
    assert again["encoded"] == 0 and again["written_shards"] == 0


def test_store_refuses_damage_and_a_second_writer(tmp_path: Path) -> None:
    enc = HashedEncoder(dim=8)
    build_store(enc, SENTENCES, tmp_path / "s", "fp16", shard_bytes=10_000)
    writer = StoreWriter(tmp_path / "s", enc.name, 8, enc.max_len, "fp16", 1 << 20)
    with pytest.raises(StoreError, match="another embed-captions"):
        StoreWriter(tmp_path / "s", enc.name, 8, enc.max_len, "fp16", 1 << 20)
    writer.close()
    with pytest.raises(StoreError, match="choose another --out"):
        StoreWriter(tmp_path / "s", enc.name, 8, enc.max_len, "int8", 1 << 20)
    shard = tmp_path / "s" / "shard-00000.bin"
    blob = bytearray(shard.read_bytes())
    blob[1] ^= 0xFF  # a flipped bit in the first entry: served as a miss, never as wrong states
    shard.write_bytes(bytes(blob))
    store = CaptionStore(tmp_path / "s")
    with pytest.warns(UserWarning, match="checksum"):
        assert store.get(SENTENCES[0]) is None
    assert store.errors == 1 and store.get(SENTENCES[1]) is not None
    shard.write_bytes(bytes(blob[:10]))
    with pytest.raises(StoreError, match="does not match its index"):
        CaptionStore(tmp_path / "s")


def test_encoder_name_needs_no_weights() -> None:
    assert encoder_name("hashed", 32, dim=32) == build_text_encoder("hashed", 32, dim=32).name
    assert encoder_name("hashed", 12, dim=16) == HashedEncoder(dim=16, max_len=12).name
    assert encoder_name("minilm", 20, True) == "minilm-l6-len20-special"


def test_text_store_config_is_checked_with_a_remedy(tmp_path: Path) -> None:
    store = tmp_path / "s"
    cfg = load_config("tiny", [f"text.store={store}"])
    with pytest.raises(ConfigError, match=r"'text\.store'.*meta\.json is missing.*embed-captions"):
        check_store_config(cfg)
    enc = build_text_encoder("hashed", dim=32)
    build_store(enc, SENTENCES, store, "fp32")
    check_store_config(cfg)  # fp32 store, fp16 cache: same training values
    load_config("tiny", [f"text.store={store}", "text.cache_dtype=fp32"])
    bad = {
        "text.hashed_dim=16": "built with text encoder 'hashed-32'",
        "text.max_len=20": "hashed-32-len20",
        "text.cache_dtype=int8": "set text.cache_dtype=fp32 or rebuild it with --dtype int8",
    }
    for override, message in bad.items():
        with pytest.raises(ConfigError, match=message):
            check_store_config(load_config("tiny", [f"text.store={store}", override]))


def test_training_reads_the_store_and_counts_what_it_lacks(tmp_path: Path) -> None:
    base = ["train.batch_size=4", "train.steps=3", "text.num_captions=3", "data.train_size=12"]
    cfg = load_config("tiny", base)
    cache = build_caption_cache(cfg)
    train = PretrainStream(cfg, text_spec(cfg)).dataset
    sentences = [c for i in range(len(train)) for c in train[i]["captions"]]
    build_store(cache.encoder, sentences[: len(sentences) // 2], tmp_path / "half", "fp16")
    build_store(cache.encoder, sentences, tmp_path / "all", "fp16")
    plain = PretrainStream(cfg, text_spec(cfg))
    for name, expect_misses in (("all", False), ("half", True)):
        cfg_s = load_config("tiny", [*base, f"text.store={tmp_path / name}"])
        stream = PretrainStream(cfg_s, text_spec(cfg_s))
        misses = 0.0
        for step in range(3):
            a, b = plain[step], stream[step]
            assert torch.equal(a["text"], b["text"]) and torch.equal(a["text_mask"], b["text_mask"])
            misses += b["stats"]["text_store_misses"]
            assert "text_store_misses" not in a["stats"]
        assert (misses > 0) == expect_misses
        assert stream.cache.stats["store_misses"] == misses


def test_embed_captions_command_builds_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["data", "embed-captions", "tiny", "data.train_size=6", "--splits", "train", "--no-progress"]
    out = str(tmp_path / "store")
    assert main([*args, "--out", out, "--dtype", "int8"]) == 0
    first = capsys.readouterr().out
    assert "encoded now" in first and "text.store=" in first and "(hashed-32, int8)" in first
    assert main([*args, "--out", out, "--dtype", "int8"]) == 0
    assert " 0 encoded now" in capsys.readouterr().out
    assert main([*args, "--out", out]) == 2  # fp16 states into an int8 store: refused, naming both
    assert "choose another --out" in capsys.readouterr().err
