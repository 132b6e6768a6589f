"""``tcjepa pretrain configs/tiny.yaml data.name=webdataset data.path='DIR/shard-{...}.tar'`` trains end to end
on a converted folder (resuming is exact by construction: tests/data/test_shards.py checks the stream)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tcjepa.app.cli import main
from tcjepa.app.convert import convert
from tcjepa.train.checkpoint import load_checkpoint
from tests.data.captioned_files import make_folder, names_in

pytestmark = pytest.mark.usefixtures("single_thread")


def test_tiny_preset_trains_on_converted_shards(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TCJEPA_SHARD_INDEX_DIR", str(tmp_path / "index-cache"))
    folder = make_folder(tmp_path / "photos", names_in("train", 22) + names_in("val", 2))
    pattern = convert(str(folder), str(tmp_path / "shards"), shard_size=10, progress=False)["pattern"]
    assert pattern.endswith("shard-{000000..000002}.tar")
    common = ["pretrain", "configs/tiny.yaml", "data.name=webdataset", f"data.path={pattern}", "train.batch_size=8"]
    common += ["train.monitor_every=0", "train.log_every=1", "train.threads=1", "--no-progress"]
    run = tmp_path / "run"
    assert main([*common, "train.steps=3", f"run.dir={run}"]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2] and all(r["loss"] == r["loss"] for r in records)
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["step"] == 3
