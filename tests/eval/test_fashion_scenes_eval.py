"""A run trained on `fashion-scenes` end to end: pretraining, its probes, its dense map and word grounding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tcjepa.app.runs import eval_target
from tcjepa.config import load_config
from tcjepa.data.fashion import ENV_VAR
from tcjepa.eval.suite import Suite, run_eval
from tcjepa.train.loop import pretrain

from ..data.test_fashion import write_set
from ..data.test_fashion_scenes import N_TEST, N_TRAIN, garments

pytestmark = pytest.mark.usefixtures("single_thread")

SMALL = Suite(
    "small",
    shapes={"train": 48, "val": 24, "test": 24, "heldout": 24},
    fashion={"train": 40, "val": 20, "test": 20},
    fashion_scenes={"train": 60, "val": 30, "test": 30, "heldout": 30},
    knn_ks=(5,),
    grounding_images=12,
)


def test_fashion_scenes_run_trains_and_is_probed_on_its_own_scenes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "fashion"
    write_set(root, "train", *garments(N_TRAIN, 0))
    write_set(root, "test", *garments(N_TEST, 3))
    monkeypatch.setenv(ENV_VAR, str(root))
    run_dir = tmp_path / "run"
    overrides = ["data.name=fashion-scenes", "data.min_objects=2", "train.steps=4", "train.batch_size=4"]
    cfg = load_config("tiny", [f"run.dir={run_dir}", "train.threads=1", *overrides])
    assert pretrain(cfg, progress=False) == run_dir
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in x for x in lines)

    result = run_eval(eval_target(run_dir), SMALL, out=tmp_path / "eval", progress=False)
    m = result["metrics"]
    for key in ("fscene/class/test", "fscene/class/heldout", "fscene/count/val", "fscene/relation/test"):
        assert 0.0 <= m[key] <= 1.0 and 0.0 < m[f"chance/{key}"] <= 1.0
    assert 0.0 <= m["dense/garment/miou"] <= 1.0 and "chance/dense/garment/miou" in m
    assert "scene/colour/test" in m and "fashion/linear" in m  # the other testbeds are still read
    # Words are pointed at in fashion-scenes, so the grounded words are garment words.
    assert m["grounding/words"] > 0 and "grounding/pointing_garment" in m
    assert "grounding/pointing_colour" not in m
    md = (tmp_path / "eval" / "eval.md").read_text()
    assert "Scene probes (`fashion-scenes`" in md and "garment class (fashion-scenes)" in md
