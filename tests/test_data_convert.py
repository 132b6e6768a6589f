"""``tcjepa data convert``: shards of the chosen size, a manifest, resumption after a kill, refusals, and
interop with the ``webdataset`` library in both directions (skipped when it is not installed)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from tcjepa.app import convert as convert_module
from tcjepa.app.cli import main
from tcjepa.app.convert import convert
from tcjepa.config import ConfigError, load_config
from tcjepa.data.shard_writer import ShardFile
from tcjepa.data.sources import build_dataset
from tests.data.captioned_files import captions_for, make_coco, make_folder, names_in
from tests.data.shard_files import captions_json, keys_in, png


@pytest.fixture(autouse=True)
def _index_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TCJEPA_SHARD_INDEX_DIR", str(tmp_path / "index-cache"))


def _shard_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*.tar"))}


def test_a_folder_becomes_shards_with_a_manifest_and_reads_back(tmp_path: Path, capsys) -> None:
    names = names_in("train", 7)
    folder = make_folder(tmp_path / "photos", names, broken={names[3]: "missing"})
    out = tmp_path / "shards"
    assert main(["data", "convert", str(folder), "--out", str(out), "--shard-size", "3", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote 6 samples in 3 shards to {out} (1 entries left out" in printed
    assert f"data.path='{out}/shard-{{000000..000002}}.tar'" in printed
    m = json.loads((out / "manifest.json").read_text())
    assert [s["samples"] for s in m["shards"]] == [3, 2, 1] and m["samples"] == 6
    assert len(m["left_out"]) == 1 and names[3] in m["left_out"][0]
    assert sorted(p.name for p in out.glob("*.idx.json")) == [f"shard-00000{k}.tar.idx.json" for k in range(3)]
    with tarfile.open(out / "shard-000000.tar") as tf:
        assert tf.getnames() == [f"{k:06d}.{ext}" for k in range(3) for ext in ("png", "json")]
        meta = json.loads(tf.extractfile("000001.json").read())
    assert meta == {"captions": captions_for(names[1]), "image": names[1]}
    ds = build_dataset(load_config("tiny", ["data.name=webdataset", f"data.path={m['pattern']}"]), "train")
    assert sum(len(s) for s in ds.shards) == 6 and ds[0]["image"].shape == (3, 32, 32)


def test_coco_and_non_tar_image_formats_are_converted(tmp_path: Path) -> None:
    names = [n.replace(".png", ".bmp") for n in names_in("train", 2)]
    ann = make_coco(tmp_path / "coco", names)
    for k, n in enumerate(names):  # make_coco wrote PNG bytes under .bmp names: write real BMPs
        Image.new("RGB", (20, 12), (k, 2, 3)).save(tmp_path / "coco" / "train2017" / n, format="BMP")
    m = convert(str(ann), str(tmp_path / "out"), progress=False)
    assert m["format"] == "coco" and m["samples"] == 2
    with tarfile.open(tmp_path / "out" / "shard-000000.tar") as tf:
        assert tf.getnames() == ["000000.png", "000000.json", "000001.png", "000001.json"]


def test_a_killed_conversion_resumes_to_the_same_shards(tmp_path: Path, monkeypatch) -> None:
    folder = make_folder(tmp_path / "photos", names_in("train", 8))
    convert(str(folder), str(tmp_path / "straight"), shard_size=3, progress=False)
    real_add, added = ShardFile.add, []

    def dies_in_the_second_shard(self, *args):
        if len(added) == 4:  # the second shard's second sample: as if the process were killed there
            raise KeyboardInterrupt
        added.append(args[0])
        real_add(self, *args)

    monkeypatch.setattr(convert_module.ShardFile, "add", dies_in_the_second_shard)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        convert(str(folder), str(out), shard_size=3, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [".tmp-shard-000001.tar", "convert.json", "shard-000000.tar"]
    monkeypatch.undo()
    monkeypatch.setenv("TCJEPA_SHARD_INDEX_DIR", str(tmp_path / "index-cache"))
    with pytest.raises(ConfigError, match="pass --resume to continue it"):
        convert(str(folder), str(out), shard_size=3, progress=False)
    with pytest.raises(ConfigError, match="was converted with shard_size=3; resume with the same"):
        convert(str(folder), str(out), shard_size=4, resume=True, progress=False)
    first = (out / "shard-000000.tar").stat().st_mtime_ns
    convert(str(folder), str(out), shard_size=3, resume=True, progress=False)
    assert (out / "shard-000000.tar").stat().st_mtime_ns == first  # kept, not rewritten
    assert not list(out.glob(".tmp-*")) and _shard_bytes(out) == _shard_bytes(tmp_path / "straight")


# ------------------------------------------------------------------------------------------------ interop


@pytest.mark.dev
def test_shards_written_by_the_webdataset_library_are_read(tmp_path: Path) -> None:
    wds = pytest.importorskip("webdataset")
    keys = keys_in("train", 5)
    with wds.ShardWriter(str(tmp_path / "lib-%06d.tar"), maxcount=2) as sink:
        for k, key in enumerate(keys):
            caption = json.loads(captions_json(key))["captions"][0]
            sink.write({"__key__": key, "png": png(k), "txt": caption, "json": {"url": f"http://x/{k}"}})
    cfg = load_config("tiny", ["data.name=webdataset", f"data.path={tmp_path}/lib-{{000000..000002}}.tar"])
    ds = build_dataset(cfg, "train")
    assert len(ds) == 5 and ds[0]["captions"] == [f"Sample {keys[0]} in a shard.", "It is noisy."]


@pytest.mark.dev
def test_shards_written_by_the_converter_are_read_by_the_webdataset_library(tmp_path: Path) -> None:
    wds = pytest.importorskip("webdataset")
    names = names_in("train", 5)
    m = convert(str(make_folder(tmp_path / "photos", names)), str(tmp_path / "out"), shard_size=2, progress=False)
    samples = list(wds.WebDataset(m["pattern"], shardshuffle=False).decode("rgb8"))
    assert [s["__key__"] for s in samples] == [f"{k:06d}" for k in range(5)]
    assert [s["json"]["captions"] for s in samples] == [captions_for(n) for n in names]
    first = Image.open(io.BytesIO((tmp_path / "photos" / names[0]).read_bytes()))
    assert samples[0]["png"].shape == (first.height, first.width, 3)
