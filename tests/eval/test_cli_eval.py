"""``tcjepa eval RUN --encoder target|context``: which files it writes, what they record, and its errors."""

from __future__ import annotations

import json
import shutil

import pytest

import tcjepa.eval.suite as suite_mod
from tcjepa.app.cli import main
from tcjepa.eval.suite import Suite

pytestmark = pytest.mark.usefixtures("single_thread")

# The CLI only knows the shipped suites; "quick" is swapped for this one so the test stays seconds long.
TINY = Suite(
    "tiny",
    shapes={"train": 64, "val": 32, "test": 32, "heldout": 32},
    fashion={},
    knn_ks=(5,),
    dense=False,
    grounding_images=8,
    tasks=("count", "shape_heldout"),
)


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """The shared tiny run, copied (so its metrics.jsonl can be rewritten) with a known ema_init_share."""
    _, run_dir = trained_run
    copy = tmp_path / "run"
    copy.mkdir()
    shutil.copy(run_dir / "config.yaml", copy)
    shutil.copytree(run_dir / "checkpoints", copy / "checkpoints", ignore=shutil.ignore_patterns("step_*"))
    rows = [{"step": s, "loss": 1.0, "ema_init_share": 0.5 - 0.01 * s} for s in range(20)]
    (copy / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return copy


def test_eval_context_writes_its_own_files(run_copy, monkeypatch) -> None:
    monkeypatch.setitem(suite_mod.SUITES, "quick", TINY)
    assert main(["eval", str(run_copy), "--no-progress"]) == 0
    target_json = (run_copy / "eval.json").read_text()
    target = json.loads(target_json)["settings"]
    assert target["encoder"] == "target" and target["ema_init_share"] == pytest.approx(0.31)
    md = (run_copy / "eval.md").read_text()
    assert "**Warning: the target encoder is still 31% its random initialisation" in md

    assert main(["eval", str(run_copy), "--encoder", "context", "--no-progress"]) == 0
    assert (run_copy / "eval.json").read_text() == target_json  # not overwritten
    context = json.loads((run_copy / "eval_context.json").read_text())
    assert context["settings"]["encoder"] == "context"
    assert context["settings"]["ema_init_share"] == pytest.approx(0.31)
    context_md = (run_copy / "eval_context.md").read_text()
    assert "Encoder: `context`" in context_md and "Warning" not in context_md
    # Different encoders, different features: the probes do not read the same numbers by accident.
    assert context["metrics"]["health/rankme"] != json.loads(target_json)["metrics"]["health/rankme"]


def test_eval_context_of_an_exported_encoder_is_a_clear_error(trained_run, tmp_path, capsys) -> None:
    from tcjepa.app.runs import export_run

    _, run_dir = trained_run
    export_run(run_dir, tmp_path / "enc")
    assert main(["eval", str(tmp_path / "enc"), "--encoder", "context", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "tcjepa: error:" in err and "needs the run folder" in err
    assert not (tmp_path / "enc" / "eval_context.json").exists()
