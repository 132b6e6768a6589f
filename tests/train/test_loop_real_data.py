"""``tcjepa pretrain configs/tiny.yaml data.name=jsonl data.path=FOLDER`` trains end to end on image files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tcjepa.app.cli import main
from tcjepa.train.checkpoint import load_checkpoint
from tests.data.captioned_files import make_folder, names_in

pytestmark = pytest.mark.usefixtures("single_thread")


def test_tiny_preset_trains_on_a_captioned_folder_and_counts_skipped_images(tmp_path: Path, capsys) -> None:
    # 22 training images (one of them a cut JPEG) and 2 in val, which the monitors use at the last step.
    train = names_in("train", 22)
    folder = make_folder(tmp_path / "photos", train + names_in("val", 2), broken={train[5]: "corrupt"})
    run = tmp_path / "run"
    common = ["pretrain", "configs/tiny.yaml", "data.name=jsonl", f"data.path={folder}", "train.steps=3"]
    common += ["train.batch_size=8", "train.log_every=1", "train.threads=1", "--no-progress"]
    assert main([*common, f"run.dir={run}", "data.on_error=skip"]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2]
    # 24 draws from a 22-image epoch: the broken image comes up once or twice, each time counted and replaced.
    assert records[-1]["data_skipped_total"] == sum(r["data_skipped"] for r in records) >= 1
    assert "rankme" in records[-1] and "text_usage" in records[-1]  # the monitors ran on the val images
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["step"] == 3
    # With data.on_error=raise the same folder stops the run, naming the file.
    capsys.readouterr()
    assert main([*common, f"run.dir={tmp_path / 'strict'}", "data.on_error=raise"]) == 1
    assert f"tcjepa: error: {folder / train[5]}: cannot decode image" in capsys.readouterr().err
