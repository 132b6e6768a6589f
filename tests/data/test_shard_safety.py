"""Bad and hostile shards: the exact outcome of each (raise naming the shard, or skip and count), and that
reading a shard never writes a file or follows a link."""

from __future__ import annotations

import logging
import tarfile
from pathlib import Path

import pytest

from tcjepa.data.decode import BadSample
from tcjepa.data.shard_paths import parse_shard_path
from tcjepa.data.shards import ShardSamples
from tcjepa.data.tar_index import scan_shard

from .shard_files import add, captions_json, keys_in, png, write_shard


@pytest.fixture(autouse=True)
def _index_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TCJEPA_SHARD_INDEX_DIR", str(tmp_path / "index-cache"))


def _samples(shard: Path, on_error: str = "raise") -> ShardSamples:
    return ShardSamples(parse_shard_path(str(shard)), "train", 16, on_error=on_error)


def _files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if "index-cache" not in p.parts and not p.name.endswith(".idx.json")}


def test_a_truncated_shard_keeps_the_samples_before_the_cut(tmp_path: Path, caplog) -> None:
    keys = keys_in("train", 4)
    shard = write_shard(tmp_path / "cut.tar", keys)
    whole = shard.read_bytes()
    third_image = scan_shard(shard).image[2][0]
    shard.write_bytes(whole[: third_image + 100])  # cut inside the third sample's image
    with pytest.raises(BadSample, match=r"cut\.tar: truncated shard: member '.*\.png' is cut at byte \d+"):
        _samples(shard)
    with caplog.at_level(logging.WARNING, "tcjepa.data"):
        ds = _samples(shard, "skip")
    assert len(ds) == 2 and "the 2 samples before the cut are kept" in caplog.text
    assert [ds.shards[0].keys[i] for _, i in ds.rows] == keys[:2]
    assert ds[1]["captions"][-1] == f"Pixels of {keys[1]}."


def test_a_shard_cut_between_samples_is_reported_as_truncated(tmp_path: Path) -> None:
    keys = keys_in("train", 3)
    shard = write_shard(tmp_path / "cut.tar", keys)
    end_of_second = sum(scan_shard(shard).json[1])  # after the second sample's json
    shard.write_bytes(shard.read_bytes()[: (end_of_second + 511) // 512 * 512])
    idx = scan_shard(shard)
    assert idx.keys == keys[:2]
    assert idx.problems == [
        f"{shard}: truncated shard: it ends at byte {shard.stat().st_size} without the "
        "end-of-archive blocks; the 2 samples before the cut are kept"
    ]


def test_a_file_that_is_not_a_tar_names_the_shard(tmp_path: Path) -> None:
    shard = tmp_path / "junk.tar"
    shard.write_bytes(b"this is not a tar file" * 40)
    with pytest.raises(BadSample, match=r"junk\.tar: not a readable tar file"):
        _samples(shard)


@pytest.mark.parametrize(
    ("name", "kind", "link", "reason"),
    [
        ("../../escape.png", tarfile.REGTYPE, "", "a '..' path component"),
        ("/tmp/absolute.png", tarfile.REGTYPE, "", "an absolute path"),
        ("sym.png", tarfile.SYMTYPE, "/etc/passwd", "a symbolic link \\(to '/etc/passwd'"),
        ("hard.png", tarfile.LNKTYPE, "GOOD.png", "a hard link"),
        ("fifo.png", tarfile.FIFOTYPE, "", "a device, fifo or other special file"),
    ],
)
def test_unsafe_members_are_never_used_nor_written(tmp_path: Path, name, kind, link, reason, caplog) -> None:
    good = keys_in("train", 2)
    data = png(7) if kind == tarfile.REGTYPE else b""
    shard = write_shard(
        tmp_path / "shards" / "bad.tar", good, extra=lambda tf: add(tf, name, data, kind, link.replace("GOOD", good[0]))
    )
    before = _files_under(tmp_path)
    with pytest.raises(BadSample, match=rf"bad\.tar: member '{name}' is {reason}"):
        _samples(shard)
    with caplog.at_level(logging.WARNING, "tcjepa.data"):
        ds = _samples(shard, "skip")
    assert "1 problem(s)" in caplog.text
    assert len(ds) == 2 and [ds[i]["captions"][-1] for i in range(2)] == [f"Pixels of {k}." for k in good]
    assert _files_under(tmp_path) == before  # nothing extracted, nothing created
    assert not Path("/tmp/absolute.png").exists() and not (tmp_path.parent / "escape.png").exists()


def test_a_sample_with_an_image_but_no_captions_is_captionless(tmp_path: Path) -> None:
    key = keys_in("train", 1)[0]
    shard = write_shard(tmp_path / "a.tar", [], extra=lambda tf: add(tf, f"{key}.png", png(0)))
    item = _samples(shard)[0]
    assert item["captions"] == [] and item["image"].shape == (3, 16, 16)


def test_a_key_without_an_image_is_a_problem(tmp_path: Path) -> None:
    keys = keys_in("train", 2)
    shard = write_shard(tmp_path / "a.tar", keys[:1], extra=lambda tf: add(tf, f"{keys[1]}.json", captions_json("x")))
    with pytest.raises(BadSample, match=rf"sample '{keys[1]}' has no image \(json\); skipped"):
        _samples(shard)
    assert len(_samples(shard, "skip")) == 1


def test_a_corrupt_image_raises_naming_shard_and_key_or_is_substituted(tmp_path: Path) -> None:
    keys = keys_in("train", 3)

    def corrupt(tf):
        add(tf, f"{keys[2]}.png", png(3)[:60])
        add(tf, f"{keys[2]}.json", captions_json(keys[2]))

    shard = write_shard(tmp_path / "a.tar", keys[:2], extra=corrupt)
    with pytest.raises(BadSample, match=rf"a\.tar:{keys[2]}: cannot decode image .*data\.on_error=skip"):
        _samples(shard)[2]
    item = _samples(shard, "skip")[2]
    assert item["skipped"] == 1 and item["index"] == 0  # the next readable sample, wrapping at the end


def test_a_non_utf8_txt_caption_is_a_bad_sample(tmp_path: Path) -> None:
    keys = keys_in("train", 2)

    def latin1(tf):
        add(tf, f"{keys[1]}.png", png(5))
        add(tf, f"{keys[1]}.txt", "Un caf\xe9 noir.".encode("latin-1"))

    shard = write_shard(tmp_path / "a.tar", keys[:1], extra=latin1)
    with pytest.raises(BadSample, match=rf"{keys[1]}\.txt: not UTF-8 \(byte 0xe9 at offset 6\)"):
        _samples(shard)[1]
    assert _samples(shard, "skip")[1]["skipped"] == 1
