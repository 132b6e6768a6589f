"""The dataset registry: data.name is checked against DATASETS, naming the choices and the closest one."""

from __future__ import annotations

import pytest

from tcjepa.app.cli import main
from tcjepa.config import ConfigError, load_config
from tcjepa.data.shapes import ShapesDataset
from tcjepa.data.sources import DATASETS, build_dataset, check_data_config


def test_registered_name_builds_its_dataset() -> None:
    cfg = load_config("tiny", ["data.train_size=7"])
    assert "shapes" in DATASETS
    ds = build_dataset(cfg)
    assert isinstance(ds, ShapesDataset) and len(ds) == 7


def test_unknown_name_names_the_key_the_choices_and_the_closest() -> None:
    cfg = load_config("tiny", ["data.name=shapez"])  # the config layer cannot know the names any more
    with pytest.raises(
        ConfigError, match=r"'data\.name' must be one of shapes, jsonl, coco; got 'shapez' \(did you mean 'shapes'"
    ):
        check_data_config(cfg)
    with pytest.raises(ConfigError, match=r"data\.name"):
        build_dataset(cfg)


def test_cli_rejects_an_unknown_dataset_at_start(tmp_path, capsys) -> None:
    assert main(["pretrain", "tiny", "data.name=shape", f"run.dir={tmp_path}/run"]) == 2
    assert (
        "config key 'data.name' must be one of shapes, jsonl, coco; got 'shape' (did you mean 'shapes'?)"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "run").exists()
