"""``tcjepa compare``: arms x seeds on the tiny preset, report numbers traced back to each run's files."""

from __future__ import annotations

import json
import statistics

import pytest

from tcjepa.compare import run_compare
from tcjepa.config import ConfigError
from tcjepa.eval.suite import Suite
from tcjepa.sweeps import load_sweep, plan_from_configs, sweeps

pytestmark = pytest.mark.usefixtures("single_thread")

TINY_SUITE = Suite(
    "tiny",
    shapes={"train": 64, "val": 32, "test": 32, "heldout": 32},
    fashion={},
    knn_ks=(5,),
    dense=False,
    grounding_images=8,
)
SWEEP = """
description: test sweep
base: tiny
overrides: [train.steps=3, train.batch_size=4, train.log_every=1, train.monitor_every=2, train.threads=1]
methods:
  I-JEPA: {method: ijepa}
  TC-JEPA: {method: tcjepa}
settings:
  default: {}
  small targets: {mask.target_scale: [0.1, 0.15]}
"""


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    (root / "sweep.yaml").write_text(SWEEP)
    plan = load_sweep(str(root / "sweep.yaml"))
    report = run_compare(plan, seeds=2, out=root / "out", suite=TINY_SUITE, progress=False, command="test")
    return plan, root / "out", report


def test_sweep_crosses_methods_and_settings(tmp_path) -> None:
    (tmp_path / "s.yaml").write_text(SWEEP)
    plan = load_sweep(str(tmp_path / "s.yaml"))
    assert [a.label for a in plan.arms] == [
        "I-JEPA | default",
        "TC-JEPA | default",
        "I-JEPA | small targets",
        "TC-JEPA | small targets",
    ]
    assert "mask.target_scale=[0.1, 0.15]" in plan.arms[3].overrides
    assert plan.arms[3].slug == "tc-jepa-small-targets"
    (tmp_path / "bad.yaml").write_text("methods: {A: {method: ijepa}}\nseting: {}\n")
    with pytest.raises(ConfigError, match="unknown keys"):
        load_sweep(str(tmp_path / "bad.yaml"))
    with pytest.raises(ConfigError, match="shipped sweeps"):
        load_sweep("no-such-sweep")
    assert {"methods", "masks", "captions", "demo"} <= set(sweeps())
    plan = plan_from_configs(["tiny", "demo"])
    assert [a.label for a in plan.arms] == ["tiny", "demo"] and plan.arms[1].config.endswith("demo.yaml")
    with pytest.raises(ConfigError, match="must differ"):
        plan_from_configs(["tiny", "configs/tiny.yaml"])


def test_report_numbers_come_from_the_runs(compared) -> None:
    plan, out, report_md = compared
    report = json.loads((out / "report.json").read_text())
    assert report["arms"] == [a.label for a in plan.arms] + ["random-init"]
    for arm in plan.arms:
        per_seed = [json.loads((out / arm.slug / f"seed{s}" / "eval.json").read_text())["metrics"] for s in (0, 1)]
        agg = report["metrics"][arm.label]["scene/shape/test"]
        assert agg["values"] == [m["scene/shape/test"] for m in per_seed]
        assert agg["mean"] == pytest.approx(statistics.fmean(agg["values"]))
        assert agg["std"] == pytest.approx(statistics.stdev(agg["values"]))
    ref, other = plan.arms[0], plan.arms[1]
    a = report["metrics"][ref.label]["scene/count/test"]["values"]
    b = report["metrics"][other.label]["scene/count/test"]["values"]
    d = report["paired_vs_reference"][other.label]["scene/count/test"]
    assert d["mean"] == pytest.approx(statistics.fmean([y - x for x, y in zip(a, b)]))
    assert d["ahead"] == sum(y > x for x, y in zip(a, b)) and d["n"] == 2
    assert "grounding/pointing" in report["metrics"][other.label]
    assert "grounding/pointing" not in report["metrics"][ref.label]
    text = report_md.read_text()
    assert "## Paired differences against I-JEPA | default" in text
    header = next(line for line in text.splitlines() if line.startswith("| metric | chance |"))
    assert header.count(" | ") == 2 + len(report["arms"]) - 1  # labels with "|" are escaped, not extra columns
    assert all(f"- {a.label}: " + ", ".join(f"`{o}`" for o in a.overrides) in text for a in plan.arms)
    for fig in ("probes.png", "curves.png", "sweep.png", "word_maps.png", "word_maps_raw.png"):
        assert (out / fig).stat().st_size > 1000 and f"({fig})" in text


def test_rerun_reuses_runs_and_evaluations(compared) -> None:
    plan, out, _ = compared
    files = [out / a.slug / "seed1" / n for a in plan.arms for n in ("checkpoints/latest.pt", "eval.json")]
    before = {f: f.stat().st_mtime_ns for f in files}
    run_compare(plan, seeds=2, out=out, suite=TINY_SUITE, progress=False, command="test")
    assert {f: f.stat().st_mtime_ns for f in files} == before


def test_a_bad_arm_fails_before_any_training(tmp_path) -> None:
    (tmp_path / "s.yaml").write_text("base: tiny\nmethods: {A: {method: ijepa}, B: {train.stepz: 3}}\n")
    with pytest.raises(ConfigError, match="train.steps"):
        run_compare(load_sweep(str(tmp_path / "s.yaml")), 1, tmp_path / "out", suite=TINY_SUITE, progress=False)
    assert not (tmp_path / "out" / "a").exists()


def test_only_seeds_trains_those_and_reports_what_exists(tmp_path) -> None:
    (tmp_path / "s.yaml").write_text(
        "base: tiny\noverrides: [train.steps=2, train.batch_size=4, train.threads=1]\n"
        "methods: {A: {method: ijepa}}\nfloor: false\n"
    )
    plan = load_sweep(str(tmp_path / "s.yaml"))
    run_compare(plan, seeds=2, out=tmp_path / "out", suite=TINY_SUITE, progress=False, only_seeds=[1])
    assert not (tmp_path / "out" / "a" / "seed0").exists() and (tmp_path / "out" / "a" / "seed1" / "eval.json").exists()
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert len(report["metrics"]["A"]["scene/shape/test"]["values"]) == 1


def test_a_diverging_arm_is_recorded_and_the_others_go_on(tmp_path, monkeypatch) -> None:
    import tcjepa.compare as compare

    real = compare.pretrain

    def pretrain(cfg, **kw):
        if cfg.method == "tcjepa":
            raise compare.TrainingDiverged("loss is nan at step 1")
        return real(cfg, **kw)

    monkeypatch.setattr(compare, "pretrain", pretrain)
    (tmp_path / "s.yaml").write_text(
        "base: tiny\noverrides: [train.steps=2, train.batch_size=4, train.threads=1]\n"
        "methods: {A: {method: ijepa}, B: {method: tcjepa}}\nfloor: false\n"
    )
    report = run_compare(load_sweep(str(tmp_path / "s.yaml")), 1, tmp_path / "out", suite=TINY_SUITE, progress=False)
    assert "nan at step 1" in (tmp_path / "out" / "b" / "seed0" / "FAILED.txt").read_text()
    assert (tmp_path / "out" / "a" / "seed0" / "eval.json").is_file()
    text = report.read_text()
    assert "## Failed runs" in text and "b/seed0" in text
    assert json.loads((tmp_path / "out" / "report.json").read_text())["arms"] == ["A"]
