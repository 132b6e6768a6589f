"""``tcjepa eval`` end to end on the tiny trained run: every metric family, files, and what is skipped."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tcjepa.app.runs import eval_target
from tcjepa.eval.features import Features
from tcjepa.eval.suite import Suite, run_eval

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
        "scene/shape/val",
        "scene/count/heldout",
        "scene/shape_heldout/heldout",
        "knn/colour/k10",
        "attentive/count/test",
        "attentive/count/val",
        "data/heldout_largest_share",
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
    assert saved["settings"]["encoder"] == "target" and "ema_init_share" in saved["settings"]
    md = (tmp_path / "eval.md").read_text()
    assert "pointing game" in md and "| count: number of objects" in md


def test_exported_encoder_evaluates_without_grounding(trained_run, tmp_path) -> None:
    from tcjepa.app.runs import export_run

    _, run_dir = trained_run
    export_run(run_dir, tmp_path / "enc")
    result = run_eval(eval_target(tmp_path / "enc"), SMALL, out=None, progress=False)
    assert "scene/shape/test" in result["metrics"]
    assert not any(k.startswith("grounding/") for k in result["metrics"])


def test_eval_target_rejects_other_folders(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="neither a tcjepa run folder"):
        eval_target(tmp_path)


# ---- routing: every number comes from the split it is named after -----------------------------------

# Per split: the classes the features encode and the labels the probe is graded on. The probe learns
# labels = classes, so val (labels = classes) scores 1, test (labels shifted) 0 and heldout (half shifted)
# 0.5: a swap of any two splits changes a reported number. Val's label mix also differs from test's, so
# swapped chance levels show too.
ROUTES = {
    "train": (torch.arange(4).repeat(40), 0),
    "val": (torch.tensor([0] * 30 + [1, 2, 3] * 10), 0),
    "test": (torch.arange(4).repeat(15), 1),
    "heldout": (torch.arange(4).repeat(15), None),  # first half right, second half shifted
}


def _routed_features(split: str, label_key: str) -> Features:
    classes, shift = ROUTES[split]
    if shift is None:
        labels = torch.cat([classes[:30], (classes[30:] + 1) % 4])
    else:
        labels = (classes + shift) % 4
    g = torch.Generator().manual_seed(len(split))
    x = torch.nn.functional.one_hot(classes, 8).float() * 3 + 0.05 * torch.randn(len(classes), 8, generator=g)
    extra = {"heldout_slot": torch.tensor([0, 1, -1, 2] * (len(classes) // 4))} if label_key == "count" else {}
    return Features(pooled=x, labels={label_key: labels, **extra})


def test_evaluate_reports_val_and_test_from_their_own_splits(monkeypatch) -> None:
    import tcjepa.eval.suite as suite_mod

    def fake_features(target, dataset, last4, patches, device, progress, desc):
        family, split = desc.split()[-1].split("/")
        return _routed_features(split, "count" if family == "shapes" else "class")

    monkeypatch.setattr(suite_mod, "_features", fake_features)
    monkeypatch.setattr(suite_mod, "fashion_available", lambda: True)
    monkeypatch.setattr(suite_mod, "FashionMNIST", lambda split, **kwargs: split)
    suite = Suite(
        "routing",
        shapes={"train": 1, "val": 1, "test": 1, "heldout": 1},
        fashion={"train": 1, "val": 1, "test": 1},
        knn_ks=(5,),
        dense=False,
        tasks=("count",),
    )
    target = suite_mod.EvalTarget(torch.nn.Identity(), 32, "synthetic")
    m = suite_mod.evaluate(target, suite, progress=False)
    assert m["scene/count/val"] == pytest.approx(1.0)
    assert m["scene/count/test"] == pytest.approx(0.0)
    assert m["scene/count/heldout"] == pytest.approx(0.5)
    assert m["chance/scene/count/val"] == pytest.approx(0.5)  # majority training class 0
    assert m["chance/scene/count/test"] == pytest.approx(0.25)
    assert m["knn/count/k5"] == pytest.approx(0.0)  # kNN is read on test only
    assert m["fashion/linear/val"] == pytest.approx(1.0) and m["fashion/linear"] == pytest.approx(0.0)
    assert m["chance/fashion/linear/val"] == pytest.approx(0.5)
    assert m["chance/fashion/linear"] == pytest.approx(0.25)
    assert m["data/heldout_largest_share"] == pytest.approx(0.25)


# ---- which encoder, and how much of the EMA target is still random ---------------------------------


def _records(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_logged_ema_init_share_reads_the_last_record_before_the_checkpoint(tmp_path) -> None:
    from tcjepa.app.runs import logged_ema_init_share

    assert logged_ema_init_share(tmp_path) is None  # no metrics.jsonl
    _records(tmp_path / "metrics.jsonl", [{"step": s, "ema_init_share": 0.9**s} for s in range(5)])
    assert logged_ema_init_share(tmp_path) == pytest.approx(0.9**4)
    assert logged_ema_init_share(tmp_path, step=3) == pytest.approx(0.9**2)  # steps >= 3 are past the checkpoint
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "ema_in')  # torn by a crash
    assert logged_ema_init_share(tmp_path) == pytest.approx(0.9**4)
    _records(tmp_path / "metrics.jsonl", [{"step": 0, "loss": 1.0}])  # an old run
    assert logged_ema_init_share(tmp_path) is None


def _markdown(**settings) -> str:
    from dataclasses import asdict

    from tcjepa.eval.suite import eval_markdown

    base = {"target": "r", "suite": asdict(SMALL), "features": "f", "image_size": 32, "seconds": 1, "machine": "m"}
    return eval_markdown({"metrics": {}, "settings": {**base, **settings}})


def test_markdown_warns_when_the_target_is_still_mostly_random() -> None:
    warning = (
        "**Warning: the target encoder is still 30% its random initialisation; evaluate --encoder context "
        "or train with a shorter EMA horizon.**"
    )
    md = _markdown(encoder="target", ema_init_share=0.3)
    assert warning in md and "Encoder: `target`" in md
    assert md.index(warning) < md.index("## Scene probes")  # near the top
    low = _markdown(encoder="target", ema_init_share=0.01)
    assert "1.0%" in low and "Warning" not in low
    assert "Warning" not in _markdown(encoder="context", ema_init_share=0.3)  # the context encoder is not held back
    assert "ema_init_share` (share of the random init left in the EMA target): not logged" in _markdown(
        encoder="target", ema_init_share=None
    )
    assert "ema_init_share" not in _markdown()  # an exported encoder: nothing to report


def test_eval_target_picks_the_requested_encoder(trained_run, tmp_path) -> None:
    from tcjepa.app.runs import export_run

    _, run_dir = trained_run
    target = eval_target(run_dir)
    assert target.encoder is target.method.target_encoder and target.info["encoder"] == "target"
    context = eval_target(run_dir, encoder="context")
    assert context.encoder is context.method.context_encoder and context.info["encoder"] == "context"
    assert "ema_init_share" in context.info
    with pytest.raises(ValueError, match="choose one of target, context"):
        eval_target(run_dir, encoder="predictor")
    export_run(run_dir, tmp_path / "enc")
    with pytest.raises(ValueError, match="exported encoder.*needs the run folder"):
        eval_target(tmp_path / "enc", encoder="context")


def test_eval_target_explains_a_method_without_context_encoder(trained_run, monkeypatch) -> None:
    import tcjepa.app.runs as runs

    class TargetOnly(torch.nn.Module):
        has_ema_target = False
        frozen_target = False  # the method contract's flags (methods/base.py)

        def __init__(self) -> None:
            super().__init__()
            self.encoder = torch.nn.Identity()

    cfg, run_dir = trained_run
    monkeypatch.setattr(runs, "load_run_method", lambda path: (cfg, TargetOnly()))
    with pytest.raises(ValueError, match="has no context_encoder to evaluate; use --encoder target"):
        eval_target(run_dir, encoder="context")
