"""Unreadable photos under data.on_error=skip (the default): replaced, counted per reason, summarised at the
end, and a run whose skipped fraction passes data.max_skipped_fraction stops with a message instead."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tcjepa.app.cli import main
from tcjepa.config import load_config
from tcjepa.train.loop import TooManySkipped, pretrain
from tests.data.captioned_files import make_folder, names_in

pytestmark = pytest.mark.usefixtures("single_thread")
BASE = ["data.name=jsonl", "train.batch_size=8", "train.monitor_every=0", "train.threads=1", "text.encoder=hashed"]


def _folder(tmp_path: Path, broken: dict[str, str]) -> Path:
    names = names_in("train", 24)
    return make_folder(tmp_path / "photos", names, {names[int(k)]: how for k, how in broken.items()})


def test_skips_are_counted_per_reason_and_summarised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = _folder(tmp_path, {"3": "empty", "7": "corrupt", "11": "missing"})
    cfg = load_config("tiny", [*BASE, f"data.path={folder}", f"run.dir={tmp_path / 'run'}", "train.steps=9"])
    with caplog.at_level(logging.INFO, logger="tcjepa.train"):
        pretrain(cfg, progress=False)
    last = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    # 9 steps x 8 = 72 draws over 24 images (3 epochs): each broken image is drawn and replaced 3 times.
    assert last["data_skipped_total"] == 9
    assert last["data_empty_skipped_total"] == 3 and last["data_missing_skipped_total"] == 3
    assert last["data_undecodable_skipped_total"] == 3
    summary = [r.getMessage() for r in caplog.records if "counted over the run" in r.getMessage()]
    assert summary and "data_skipped=9" in summary[0] and "data_missing_skipped=3" in summary[0]


def test_a_run_of_mostly_unreadable_images_stops_with_a_clear_message(tmp_path: Path, capsys) -> None:
    folder = _folder(tmp_path, {str(k): "empty" for k in range(0, 24, 3)})  # a third of the images
    overrides = [*BASE, f"data.path={folder}", f"run.dir={tmp_path / 'run'}", "train.steps=80", "train.log_every=10"]
    with pytest.raises(TooManySkipped, match=r"unreadable and replaced \(empty: \d+\).*data\.max_skipped_fraction"):
        pretrain(load_config("tiny", overrides), progress=False)
    # The CLI says it in one line and exits non-zero; a looser threshold lets the same run finish.
    assert main(["pretrain", "tiny", *overrides[:-2], f"run.dir={tmp_path / 'cli'}", "train.steps=80"]) == 1
    assert "data.max_skipped_fraction=0.05" in capsys.readouterr().err
    loose = [*overrides[:-2], f"run.dir={tmp_path / 'loose'}", "train.steps=80", "data.max_skipped_fraction=0.5"]
    pretrain(load_config("tiny", loose), progress=False)
