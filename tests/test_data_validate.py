"""``tcjepa data validate``: the counts it reports on a clean and on a broken folder, and its exit status."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

from tcjepa.app.cli import main
from tcjepa.app.data_tools import OVERLONG_WORDS, validate
from tests.data.captioned_files import break_file, make_coco, make_folder, names_in, write_image, write_jsonl
from tests.data.shard_files import add, keys_in, png, write_shard, write_shards


def test_a_clean_folder_passes(tmp_path: Path, capsys) -> None:
    names = names_in("train", 4) + names_in("val", 1)
    folder = make_folder(tmp_path / "f", names)
    out = tmp_path / "report" / "summary.json"
    assert main(["data", "validate", str(folder), "--json", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "OK: 0 errors in 5 entries" in printed and f"wrote {out}" in printed
    s = json.loads(out.read_text())
    assert (s["format"], s["images"], s["splits"]) == ("jsonl", 5, {"train": 4, "val": 1, "test": 0})
    assert s["captions_per_image"] == {"2": 5} and (s["captions"], s["sentences"]) == (10, 15)
    assert (s["errors"], s["error_rate"], s["ok"]) == (0, 0.0, True)
    assert s["sentences_shared_across_images"] == 1  # "It has many colours." is in every image's first caption


def _broken_folder(tmp_path: Path) -> Path:
    names = names_in("train", 8)
    for k, name in enumerate(names):
        write_image(tmp_path / name, k)
    break_file(tmp_path / names[0], "corrupt")
    break_file(tmp_path / names[1], "missing")
    shutil.copy(tmp_path / names[3], tmp_path / names[2])  # the same picture under two names
    long = " ".join(["word"] * (OVERLONG_WORDS + 5)) + "."
    write_jsonl(
        tmp_path,
        [
            {"image": names[0], "captions": ["A cut file."]},
            {"image": names[1], "captions": ["A missing file."]},
            {"image": names[2], "captions": ["Same.", "Same."]},
            {"image": names[3], "captions": ["Same."]},
            {"image": names[4], "captions": []},
            {"image": names[5], "captions": ["", "   ", long]},
            "not json at all",
            {"image": names[6], "caption": "Six."},
            {"image": names[6], "caption": "Six again."},
            {"image": names[7], "captions": ["Seven."]},
        ],
    )
    return tmp_path


def test_a_broken_folder_fails_with_each_problem_counted(tmp_path: Path, capsys) -> None:
    folder = _broken_folder(tmp_path / "f")
    out = tmp_path / "s.json"
    assert main(["data", "validate", str(folder), "--json", str(out), "--no-progress"]) == 1
    printed = capsys.readouterr().out
    assert "FAILED: 3 errors in 9 entries, error rate 0.3333 (> --max-error-rate 0.01)" in printed
    s = json.loads(out.read_text())
    assert (s["images"], s["entries"], s["malformed_entries"]) == (8, 10, 1)
    assert (s["missing_images"], s["unreadable_images"], s["errors"]) == (1, 1, 3)
    assert s["captions_per_image"] == {"0": 1, "1": 4, "2": 2, "3": 1}  # names[6]'s two lines are one image
    assert (s["captionless_images"], s["empty_captions"], s["overlong_sentences"]) == (1, 2, 1)
    assert (s["duplicate_entries"], s["duplicate_image_files"]) == (1, 1)
    assert (s["duplicate_sentences_within_image"], s["sentences_shared_across_images"]) == (1, 1)
    assert s["problems"] == [f"{folder / 'captions.jsonl'}:7: not JSON (Expecting value at column 1)"]
    assert len(s["bad_files"]) == 2 and "cannot decode image" in s["bad_files"][1]
    # A looser threshold accepts the same data.
    assert main(["data", "validate", str(folder), "--max-error-rate", "0.5", "--no-progress"]) == 0
    assert "OK: 3 errors in 9 entries" in capsys.readouterr().out


def test_coco_is_recognised_by_its_json_file(tmp_path: Path) -> None:
    names = names_in("train", 2)
    path = make_coco(tmp_path, names)
    s = validate(path, progress=False)
    assert (s["format"], s["images"], s["image_root"], s["ok"]) == ("coco", 2, str(tmp_path / "train2017"), True)


def test_bad_arguments_exit_2(tmp_path: Path, capsys) -> None:
    folder = make_folder(tmp_path / "f", names_in("train", 1))
    assert main(["data", "validate", str(folder), "--max-error-rate", "2", "--no-progress"]) == 2
    assert "--max-error-rate 2.0: expected a fraction in [0, 1]" in capsys.readouterr().err
    assert main(["data", "validate", str(tmp_path / "nothing"), "--no-progress"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_preview_is_still_a_data_action(tmp_path: Path) -> None:
    out = tmp_path / "p.png"
    assert main(["data", "preview", "--n", "1", "--image-size", "32", "--out", str(out)]) == 0
    assert out.is_file()


def test_shards_get_the_same_report(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TCJEPA_SHARD_INDEX_DIR", str(tmp_path / "index-cache"))
    keys = keys_in("train", 4) + keys_in("val", 1)
    pattern = write_shards(tmp_path / "good", keys, per_shard=3)
    assert main(["data", "validate", pattern, "--no-progress"]) == 0
    s = validate(pattern, progress=False)
    assert (s["format"], s["images"], s["splits"]) == ("webdataset", 5, {"train": 4, "val": 1, "test": 0})
    assert (s["entries"], s["captions"], s["sentences"], s["errors"]) == (10, 10, 15, 0)

    def bad(tf: tarfile.TarFile) -> None:
        add(tf, "x0.png", png(1)[:50])  # a cut image
        add(tf, "link.png", b"", tarfile.SYMTYPE, "/etc/passwd")

    write_shard(tmp_path / "bad" / "b.tar", keys[:2], extra=bad)
    s = validate(str(tmp_path / "bad" / "b.tar"), progress=False)
    assert (s["images"], s["malformed_entries"], s["unreadable_images"], s["ok"]) == (3, 1, 1, False)
    assert "is a symbolic link" in s["problems"][0] and "b.tar:x0: cannot decode image" in s["bad_files"][0]
    capsys.readouterr()
    assert main(["data", "validate", str(tmp_path / "bad" / "b.tar"), "--no-progress"]) == 1
    assert "FAILED: 2 errors" in capsys.readouterr().out
