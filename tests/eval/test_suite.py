"""``tcjepa eval`` end to end on the tiny trained run: every metric family, files, and what is skipped."""

from __future__ import annotations

import json
import math

import pytest

from tcjepa.eval.suite import Suite, run_eval
from tcjepa.runs import eval_target

pytestmark = pytest.mark.usefixtures("single_thread")

SMALL = Suite(
    "small",
    shapes={"train": 96, "val": 48, "test": 48, "heldout": 48},
    fashion={},
    knn_ks=(5, 10),
    attentive_tasks=("count",),
    attentive_epochs=2,
    grounding_images=16,
)


def test_eval_writes_every_metric_family(trained_run, tmp_path) -> None:
    _, run_dir = trained_run
    result = run_eval(eval_target(run_dir), SMALL, out=tmp_path, progress=False)
    m = result["metrics"]
    for key in (
        "scene/shape/test",
        "scene/count/heldout",
        "knn/colour/k10",
        "attentive/count/test",
        "dense/colour/miou",
        "health/rankme",
        "grounding/pointing",
        "grounding/pointing_centred",
        "grounding/pointing_agnostic",
    ):
        assert key in m, key
    for key, value in m.items():
        if key.startswith(("scene/", "knn/", "attentive/", "dense/", "grounding/pointing")):
            assert 0.0 <= value <= 1.0 or math.isnan(value), (key, value)
    # Every probe number on a test set has its chance level beside it.
    assert all(f"chance/{k}" in m for k in m if k.startswith(("scene/", "knn/", "attentive/")))
    assert m["chance/grounding/pointing"] < 0.5
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["metrics"] == pytest.approx(m, nan_ok=True)
    assert saved["settings"]["suite"]["name"] == "small" and saved["settings"]["method"] == "tcjepa"
    md = (tmp_path / "eval.md").read_text()
    assert "pointing game" in md and "| count: number of objects" in md


def test_exported_encoder_evaluates_without_grounding(trained_run, tmp_path) -> None:
    from tcjepa.export import export_run

    _, run_dir = trained_run
    export_run(run_dir, tmp_path / "enc")
    result = run_eval(eval_target(tmp_path / "enc"), SMALL, out=None, progress=False)
    assert "scene/shape/test" in result["metrics"]
    assert not any(k.startswith("grounding/") for k in result["metrics"])


def test_eval_target_rejects_other_folders(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="neither a tcjepa run folder"):
        eval_target(tmp_path)
