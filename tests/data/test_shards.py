"""The webdataset source: path syntax, the shard index and its cache, items, epoch orders, and the stream's
contract (ranks, workers, resume) on shards, including fewer shards than loader workers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tcjepa.config import ConfigError, load_config
from tcjepa.data import tar_index
from tcjepa.data.batch import text_spec
from tcjepa.data.decode import BadSample
from tcjepa.data.shard_paths import expand_braces, looks_like_shards, parse_shard_path
from tcjepa.data.shards import ShardSamples, parse_captions
from tcjepa.data.sources import build_dataset
from tcjepa.data.stream import PretrainStream, pretrain_loader

from .shard_files import add, keys_in, png, write_shard, write_shards
from .test_stream import assert_same_batch


def _cfg(path: str, *overrides: str):
    return load_config(
        "tiny",
        ["data.name=webdataset", f"data.path={path}", "train.batch_size=4", "text.num_captions=2", *overrides],
    )


@pytest.fixture(autouse=True)
def _index_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TCJEPA_SHARD_INDEX_DIR", str(tmp_path / "index-cache"))


# ------------------------------------------------------------------------------------------------ paths


def test_braces_expand_ranges_with_their_width_and_alternatives() -> None:
    assert expand_braces("s-{000008..000010}.tar") == ["s-000008.tar", "s-000009.tar", "s-000010.tar"]
    assert expand_braces("{a,b}/{1..2}.tar") == ["a/1.tar", "a/2.tar", "b/1.tar", "b/2.tar"]
    assert expand_braces("plain.tar") == ["plain.tar"]
    for bad, why in [("x{3..1}.tar", "runs backwards"), ("x{abc}.tar", "neither a range"), ("x{1..2.tar", "unbal")]:
        with pytest.raises(ValueError, match=why):
            expand_braces(bad)


def test_sources_are_comma_separated_outside_braces_with_optional_weights(tmp_path: Path) -> None:
    for name in ("a0", "a1", "b0"):
        (tmp_path / f"{name}.tar").write_bytes(b"")
    a, b = f"{tmp_path}/a{{0,1}}.tar", f"{tmp_path}/b0.tar"
    sources = parse_shard_path(f"{a}::0.7,{b}::0.3")
    assert [(s.pattern, s.weight, len(s.shards)) for s in sources] == [(a, 0.7, 2), (b, 0.3, 1)]
    assert [s.weight for s in parse_shard_path(f"{a},{b}")] == [None, None]
    with pytest.raises(ValueError, match="every source a weight"):
        parse_shard_path(f"{a}::0.7,{b}")
    with pytest.raises(ValueError, match="separate sources with commas"):
        parse_shard_path(f"{a}::{b}")
    with pytest.raises(ValueError, match="positive number"):
        parse_shard_path(f"{a}::0")
    with pytest.raises(FileNotFoundError, match=r"1 of its 2 shard files do not exist \(the first: .*b1.tar\)"):
        parse_shard_path(f"{tmp_path}/b{{0..1}}.tar")


def test_config_requires_a_path_for_webdataset() -> None:
    with pytest.raises(ConfigError, match="data.path' is required with data.name=webdataset"):
        load_config("tiny", ["data.name=webdataset"])


# ------------------------------------------------------------------------------------------------ index


def test_the_index_is_cached_beside_the_shard_and_rescanned_when_it_changes(tmp_path: Path, monkeypatch) -> None:
    shard = write_shard(tmp_path / "a.tar", ["k0", "k1"])
    first = tar_index.shard_index(shard)
    sidecar = shard.with_name("a.tar.idx.json")
    assert first.keys == ["k0", "k1"] and sidecar.is_file()
    monkeypatch.setattr(tar_index, "scan_shard", lambda p: pytest.fail("the cached index was not used"))
    assert tar_index.shard_index(shard).image == first.image
    monkeypatch.undo()
    monkeypatch.setenv("TCJEPA_SHARD_INDEX_DIR", str(tmp_path / "index-cache"))
    write_shard(shard, ["k0", "k1", "k2"])
    os.utime(shard, ns=(1, 1))  # a different mtime and size: the sidecar no longer describes the shard
    assert tar_index.shard_index(shard).keys == ["k0", "k1", "k2"]
    assert json.loads(sidecar.read_text())["size"] == shard.stat().st_size


def test_an_unwritable_shard_folder_caches_the_index_in_the_cache_folder(tmp_path: Path, monkeypatch) -> None:
    shard = write_shard(tmp_path / "ro" / "a.tar", ["k0"])
    write = tar_index._write_atomic
    # a read-only shard folder (root can write anywhere, so the refusal is simulated)
    monkeypatch.setattr(
        tar_index, "_write_atomic", lambda place, text: place.parent != shard.parent and write(place, text)
    )
    tar_index.shard_index(shard)
    assert [p.name for p in shard.parent.iterdir()] == ["a.tar"]
    assert [p.name for p in (tmp_path / "index-cache").iterdir()] == [tar_index.cache_places(shard)[1].name]


def test_members_group_by_key_up_to_the_first_dot_with_webdataset_naming() -> None:
    assert tar_index.split_member("a/b/000017.seg.png") == ("a/b/000017", "seg.png")
    assert tar_index.split_member("x.JPG") == ("x", "jpg")
    assert tar_index.split_member("README") is None


# ------------------------------------------------------------------------------------------------ items


def test_items_follow_the_shapes_format_with_one_sentence_per_caption(tmp_path: Path) -> None:
    keys = keys_in("train", 5)
    ds = build_dataset(_cfg(write_shards(tmp_path, keys, per_shard=2)))
    assert len(ds) == 5 and len(ds.shards) == 3
    item = ds[0]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert float(item["image"].min()) >= 0 and float(item["image"].max()) <= 1
    assert item["captions"] == [f"Sample {keys[0]} in a shard.", "It is noisy.", f"Pixels of {keys[0]}."]
    assert item["labels"] == {} and item["index"] == 0 and item["skipped"] == 0


def test_caption_members_json_forms_and_txt_lines() -> None:
    assert parse_captions(b'{"caption": "A. B.", "captions": ["C"]}', None, "k") == ["A. B.", "C"]
    assert parse_captions(b'{"url": "http://x", "width": 3}', b"one\n\ntwo\n", "k") == ["one", "two"]
    assert parse_captions(b'{"caption": "json wins"}', b"txt", "k") == ["json wins"]
    assert parse_captions(None, None, "k") == []
    with pytest.raises(BadSample, match=r"k\.json: \"captions\" must be a list"):
        parse_captions(b'{"captions": "x"}', None, "k")


def test_splits_are_disjoint_by_key_hash(tmp_path: Path) -> None:
    train, val = keys_in("train", 4), keys_in("val", 2)
    cfg = _cfg(write_shards(tmp_path, train + val, per_shard=3))
    got = {split: build_dataset(cfg, split) for split in ("train", "val", "test")}
    assert [len(got[s]) for s in ("train", "val", "test")] == [4, 2, 0]
    assert {got["val"].shards[k].keys[i] for k, i in got["val"].rows} == set(val)


# ------------------------------------------------------------------------------------------------ orders


def _shards(tmp_path: Path, n_shards: int = 4, per_shard: int = 5) -> list:
    pattern = write_shards(tmp_path, keys_in("train", n_shards * per_shard), per_shard)
    return parse_shard_path(pattern)


def test_every_epoch_is_a_permutation_that_depends_on_seed_and_epoch(tmp_path: Path) -> None:
    ds = ShardSamples(_shards(tmp_path))
    a, b, c = ds.epoch_order(0, 0), ds.epoch_order(0, 1), ds.epoch_order(1, 0)
    for order in (a, b, c):
        assert sorted(order.tolist()) == list(range(20))
    assert not np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(a, ShardSamples(_shards(tmp_path)).epoch_order(0, 0))


def test_a_shard_window_of_one_reads_shard_by_shard_in_a_shuffled_shard_order(tmp_path: Path) -> None:
    ds = ShardSamples(_shards(tmp_path), shard_window=1)
    orders = []
    for epoch in range(6):
        shard_of = ds.rows[ds.epoch_order(3, epoch), 0]
        runs = [int(s) for k, s in enumerate(shard_of) if k == 0 or s != shard_of[k - 1]]
        assert sorted(runs) == [0, 1, 2, 3]  # each shard once, its 5 samples together
        orders.append(tuple(runs))
    assert len(set(orders)) > 1


def test_resampled_epochs_have_the_virtual_length_and_follow_the_weights(tmp_path: Path) -> None:
    a = write_shards(tmp_path / "a", keys_in("train", 6, "a"), 3)
    b = write_shards(tmp_path / "b", keys_in("train", 6, "b"), 3)
    sources = parse_shard_path(f"{a}::0.9,{b}::0.1")
    ds = ShardSamples(sources, resampled=True, epoch_samples=2000)
    order = ds.epoch_order(0, 0)
    assert ds.epoch_length == len(order) == 2000
    assert 0.86 < float(np.mean(ds.row_source[order] == 0)) < 0.94
    assert np.array_equal(order, ds.epoch_order(0, 0)) and not np.array_equal(order, ds.epoch_order(0, 1))
    with pytest.raises(ValueError, match="pass data.resampled=true"):
        ShardSamples(sources)


# ------------------------------------------------------------------------------------------------ stream


def test_ranks_workers_and_resume_are_exact_with_fewer_shards_than_workers(tmp_path: Path) -> None:
    pattern = write_shards(tmp_path, keys_in("train", 6), per_shard=6)  # one shard, two loader workers
    cfg = _cfg(pattern, "train.steps=4", "train.batch_size=4")
    spec = text_spec(cfg)
    whole = PretrainStream(cfg, spec)
    ranks = [PretrainStream(cfg, spec, rank=r, world_size=2) for r in (0, 1)]
    for step in range(4):
        want = whole[step]
        halves = [r[step] for r in ranks]
        assert torch.equal(torch.cat([h["images"] for h in halves]), want["images"])
        assert halves[0]["captions"] + halves[1]["captions"] == want["captions"]
    straight = list(pretrain_loader(whole, 0, num_workers=0))
    resumed = list(pretrain_loader(PretrainStream(cfg, spec), 2, num_workers=2))
    assert [b["step"] for b in resumed] == [2, 3]
    for got, want in zip(resumed, straight[2:]):
        assert_same_batch(got, want)


def test_a_shard_written_to_after_indexing_is_a_clear_error(tmp_path: Path) -> None:
    shard = write_shard(tmp_path / "a.tar", keys_in("train", 2), extra=lambda tf: add(tf, "z.png", png(1)))
    ds = ShardSamples(parse_shard_path(str(shard)))
    shard.write_bytes(shard.read_bytes()[:1024])
    with pytest.raises(BadSample, match="shorter than its index says"):
        ds[1]


def test_path_syntax_and_weights_without_resampling_are_config_errors(tmp_path: Path, capsys) -> None:
    from tcjepa.app.cli import main

    pattern = write_shards(tmp_path, keys_in("train", 2), per_shard=2)
    for path, why in [(f"{pattern}::0.5", "pass data.resampled=true"), (f"{tmp_path}/x{{2..1}}.tar", "backwards")]:
        assert main(["pretrain", "tiny", "data.name=webdataset", f"data.path={path}", f"run.dir={tmp_path}/r"]) == 2
        assert why in capsys.readouterr().err


def test_a_folder_source_takes_its_tar_shards_in_name_order(tmp_path: Path) -> None:
    folder = tmp_path / "shards"
    folder.mkdir()
    for name in ("shard-000001.tar", "shard-000000.tar", "notes.txt"):
        (folder / name).write_bytes(b"")
    (src,) = parse_shard_path(str(folder))
    assert [p.name for p in src.shards] == ["shard-000000.tar", "shard-000001.tar"]
    assert looks_like_shards(str(folder))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="folder without any .tar"):
        parse_shard_path(str(tmp_path / "empty"))
