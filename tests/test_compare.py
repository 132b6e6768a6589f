"""``tcjepa compare``: arms x seeds on the tiny preset, report numbers traced back to each run's files."""

from __future__ import annotations

import dataclasses
import inspect
import json
import statistics

import pytest
from torch import nn

import tcjepa.app.compare as compare
from tcjepa.app.compare import has_context_encoder, run_compare
from tcjepa.app.plots import read_metrics as read_rows
from tcjepa.app.stats import sign_test
from tcjepa.app.sweeps import load_sweep, plan_from_configs, sweeps
from tcjepa.config import ConfigError
from tcjepa.eval.suite import Suite

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


@pytest.fixture(scope="module", autouse=True)
def context_encoder_eval():
    """A stand-in for ``runs.eval_target(run, encoder="context")`` while that keyword has not landed yet.

    The real function is used as soon as it takes ``encoder``; the stand-in only swaps in the method's
    context encoder, which is what the real one is specified to do.
    """
    real = compare.eval_target
    if "encoder" in inspect.signature(real).parameters:
        yield
        return

    def eval_target(path, encoder="target"):
        target = real(path)
        if encoder == "context":
            target = dataclasses.replace(target, encoder=target.method.context_encoder)
        return target

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(compare, "eval_target", eval_target)
        yield


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
        for stem, section in (("eval", "metrics"), ("eval_context", "context_encoder_metrics")):
            per_seed = {
                str(s): json.loads((out / arm.slug / f"seed{s}" / f"{stem}.json").read_text())["metrics"]
                for s in (0, 1)
            }
            agg = report[section][arm.label]["scene/shape/test"]
            assert agg["values"] == {s: m["scene/shape/test"] for s, m in per_seed.items()}  # keyed by seed id
            assert agg["mean"] == pytest.approx(statistics.fmean(agg["values"].values()))
            assert agg["std"] == pytest.approx(statistics.stdev(agg["values"].values()))
    ref, other = plan.arms[0], plan.arms[1]
    a = report["metrics"][ref.label]["scene/count/test"]["values"]
    b = report["metrics"][other.label]["scene/count/test"]["values"]
    d = report["paired_vs_reference"][other.label]["scene/count/test"]
    assert d["mean"] == pytest.approx(statistics.fmean([b[s] - a[s] for s in a]))
    assert d["ahead"] == sum(b[s] > a[s] for s in a) and d["n"] == 2 and d["seeds"] == [0, 1]
    assert d["p_sign"] == sign_test([b[s] - a[s] for s in a]) and d["ci_low"] <= d["mean"] <= d["ci_high"]
    assert "grounding/pointing" in report["metrics"][other.label]
    assert "grounding/pointing" not in report["metrics"][ref.label]
    text = report_md.read_text()
    assert "## Paired differences against I-JEPA | default" in text
    assert "smallest possible two-sided sign-test p is 0.5" in text and "not evidence on their own" in text
    context = text.split("## Target encoder beside the context encoder")[1].split("\n## ")[0]
    assert all(a.label.replace("|", r"\|") + ": context encoder" in context for a in plan.arms)
    rows = [read_rows(out / a.slug / f"seed{s}") for a in plan.arms for s in (0, 1)]
    setup = text.split("## Setup")[1].split("## Results")[0]
    if all("ema_init_share" in r[-1] for r in rows):  # logged by the training loop
        share = statistics.fmean(r[-1]["ema_init_share"] for r in rows[:2])
        assert report["metrics"][ref.label]["train/ema_init_share"]["mean"] == pytest.approx(share)
        # 3 steps leave nearly all of the random init in the target: the report must say so.
        assert f"**{ref.label}: the evaluated target encoder is still" in setup
    else:
        assert f"{ref.label} not logged" in setup
    header = next(line for line in text.splitlines() if line.startswith("| metric | chance |"))
    assert header.count(" | ") == 2 + len(report["arms"]) - 1  # labels with "|" are escaped, not extra columns
    assert all(f"- {a.label}: " + ", ".join(f"`{o}`" for o in a.overrides) in text for a in plan.arms)
    for fig in ("probes.png", "curves.png", "sweep.png", "word_maps.png", "word_maps_raw.png"):
        assert (out / fig).stat().st_size > 1000 and f"({fig})" in text


def test_rerun_reuses_runs_and_evaluations(compared) -> None:
    plan, out, _ = compared
    names = ("checkpoints/latest.pt", "eval.json", "eval_context.json")
    files = [out / a.slug / "seed1" / n for a in plan.arms for n in names]
    before = {f: f.stat().st_mtime_ns for f in files}
    run_compare(plan, seeds=2, out=out, suite=TINY_SUITE, progress=False, command="test")
    assert {f: f.stat().st_mtime_ns for f in files} == before
    # A missing context evaluation is redone on its own; the target's stays.
    gone = out / plan.arms[0].slug / "seed1" / "eval_context.json"
    gone.unlink()
    run_compare(plan, seeds=2, out=out, suite=TINY_SUITE, progress=False, command="test")
    assert gone.is_file() and json.loads(gone.read_text())["settings"]["suite"]["name"] == "tiny"
    assert {f: f.stat().st_mtime_ns for f in files if f != gone} == {f: t for f, t in before.items() if f != gone}


def test_context_evaluation_is_by_capability() -> None:
    # Declared, not inferred: a module with a context_encoder attribute but no flag is not a JEPA method.
    class Jepa(nn.Module):
        has_ema_target = True

    class TargetOnly(nn.Module):
        has_ema_target = False
        context_encoder = nn.Linear(2, 2)

    assert has_context_encoder(Jepa()) and not has_context_encoder(TargetOnly())


@pytest.mark.parametrize(
    ("bad", "needle"), [("train.stepz: 3", "train.steps"), ("loss.sparse_form: enropy", "did you mean 'entropy'")]
)
def test_a_bad_arm_fails_before_any_training(tmp_path, bad: str, needle: str) -> None:
    (tmp_path / "s.yaml").write_text(f"base: tiny\nmethods: {{A: {{method: ijepa}}, B: {{{bad}}}}}\n")
    with pytest.raises(ConfigError, match=needle):
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
    assert list(report["metrics"]["A"]["scene/shape/test"]["values"]) == ["1"]  # the seed id, not a position


def test_a_diverging_arm_is_recorded_and_the_others_go_on(tmp_path, monkeypatch) -> None:
    import tcjepa.app.compare as compare

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


def test_a_run_trained_with_other_settings_is_not_reused_under_the_arm(tmp_path):
    """Editing a preset after a run finished must not relabel that run: reuse checks the saved config."""
    from tcjepa.app.compare import train_or_reuse
    from tcjepa.config import ConfigError, load_config

    run_dir = tmp_path / "arm" / "seed0"
    overrides = [f"run.dir={run_dir}", "train.steps=2", "train.threads=1", "train.monitor_every=0"]
    cfg = load_config("tiny", overrides)
    train_or_reuse(cfg, progress=False)
    assert train_or_reuse(load_config("tiny", overrides + ["data.num_workers=1"]), progress=False) == run_dir
    with pytest.raises(ConfigError, match=r"(?s)optim.lr.*Move or delete"):
        train_or_reuse(load_config("tiny", overrides + ["optim.lr=0.5"]), progress=False)
    with pytest.raises(ConfigError, match="train.steps"):
        train_or_reuse(load_config("tiny", [*overrides[:1], "train.steps=1", *overrides[2:]]), progress=False)


def test_parallel_jobs_train_the_same_runs_as_one_process(tmp_path) -> None:
    # train.threads=1 in the sweep pins every run to one thread, so worker processes and the main process
    # compute the same floats: the runs, their evaluations and the report's numbers must match exactly.
    (tmp_path / "s.yaml").write_text(SWEEP)
    plan = load_sweep(str(tmp_path / "s.yaml"))
    for jobs in (1, 2):
        run_compare(plan, seeds=1, out=tmp_path / f"j{jobs}", suite=TINY_SUITE, progress=False, jobs=jobs)
    arms = sorted(p.name for p in (tmp_path / "j1").iterdir() if p.is_dir())
    assert len(arms) == 5 and arms == sorted(p.name for p in (tmp_path / "j2").iterdir() if p.is_dir())
    for arm in arms:
        one, two = (json.loads((tmp_path / f"j{j}" / arm / "seed0" / "eval.json").read_text()) for j in (1, 2))
        assert one["metrics"] == two["metrics"], arm
        if arm != "random-init":
            one, two = (read_rows(tmp_path / f"j{j}" / arm / "seed0") for j in (1, 2))
            assert one and [r["loss"] for r in one] == [r["loss"] for r in two], arm
    with pytest.raises(ValueError, match="--jobs must be >= 1"):
        run_compare(plan, seeds=1, out=tmp_path / "j0", suite=TINY_SUITE, progress=False, jobs=0)


def test_sweep_overrides_take_a_list_or_a_mapping(tmp_path) -> None:
    listed, mapped, bad = (tmp_path / f"{n}.yaml" for n in ("listed", "mapped", "bad"))
    listed.write_text("base: tiny\noverrides: [data.min_objects=2]\nmethods: {I-JEPA: {method: ijepa}}\n")
    mapped.write_text("base: tiny\noverrides: {data.min_objects: 2}\nmethods: {I-JEPA: {method: ijepa}}\n")
    bad.write_text("base: tiny\noverrides: [data.min_objects]\nmethods: {I-JEPA: {method: ijepa}}\n")
    assert load_sweep(str(listed)).overrides == load_sweep(str(mapped)).overrides == ["data.min_objects=2"]
    with pytest.raises(ConfigError, match="key=value"):
        load_sweep(str(bad))
    assert "fashion-methods" in sweeps() and "data.name=fashion-scenes" in load_sweep("fashion-methods").overrides


def test_the_contrastive_sweep_plans_four_methods_on_the_compare_base(tmp_path) -> None:
    """Dry: the arms and their configs for 3 seeds, validated as run_compare would, nothing trained."""
    plan = load_sweep("contrastive")
    assert plan.base == "compare" and plan.floor
    assert [a.label for a in plan.arms] == ["I-JEPA", "TC-JEPA", "CLIP", "SigLIP"]
    cfgs = {(s, a.slug): compare.arm_config(plan, a, s, tmp_path, []) for s in range(3) for a in plan.arms}
    assert len({c.run.dir for c in cfgs.values()}) == 12
    assert [cfgs[(0, a.slug)].method for a in plan.arms] == ["ijepa", "tcjepa", "clip", "siglip"]
    for seed in range(3):  # equal budget and image encoder in every arm
        same = {
            (c.train.steps, c.train.batch_size, c.model.encoder.embed_dim, c.data.image_size, c.seed)
            for (s, _), c in cfgs.items()
            if s == seed
        }
        assert len(same) == 1
    assert not list(tmp_path.iterdir())  # planning writes nothing


def test_the_conditioning_sweep_plans_every_conditioner_on_the_compare_base(tmp_path) -> None:
    """Dry: each arm's config for 3 seeds is valid for its method (the link-free conditioners without the
    regularisers), budgets and encoders are equal, nothing is trained or written."""
    from tcjepa.methods import check_config
    from tcjepa.models.conditioning import CONDITIONERS

    plan = load_sweep("conditioning")
    assert plan.base == "compare" and plan.floor
    cfgs = {(s, a.label): compare.arm_config(plan, a, s, tmp_path, []) for s in range(3) for a in plan.arms}
    assert len({c.run.dir for c in cfgs.values()}) == 3 * len(plan.arms) == 24
    for cfg in cfgs.values():
        check_config(cfg)  # what a run's start checks
    tc = {label: c for (s, label), c in cfgs.items() if s == 0 and c.method == "tcjepa"}
    assert {c.model.predictor.conditioning for c in tc.values()} == set(CONDITIONERS) - {"none"}
    assert tc["words last"].model.predictor.cond_layers == "last"
    assert tc["words"].loss.sparse_form != "none" and tc["words no reg"].loss.sparse_form == "none"
    for seed in range(3):
        same = {
            (c.train.steps, c.train.batch_size, c.model.encoder.embed_dim, c.model.predictor.dim, c.seed)
            for (s, _), c in cfgs.items()
            if s == seed
        }
        assert len(same) == 1
    assert not list(tmp_path.iterdir())


def test_seeds_merged_from_an_earlier_report_equal_the_full_report(compared, tmp_path) -> None:
    """Seed 1's run folders here, seed 0 only in the first comparison's report.json: same numbers as before."""
    import shutil

    plan, out, _ = compared
    out2 = tmp_path / "out2"
    for slug in [a.slug for a in plan.arms] + ["random-init"]:
        shutil.copytree(out / slug / "seed1", out2 / slug / "seed1")
    report_md = run_compare(
        plan, seeds=2, out=out2, suite=TINY_SUITE, progress=False, command="merge", merge_reports=[out / "report.json"]
    )
    assert not any(out2.glob("*/seed0")), "seeds the earlier report holds must not be trained again"
    full, merged = (json.loads((d / "report.json").read_text()) for d in (out, out2))
    for section in ("metrics", "context_encoder_metrics", "paired_vs_reference", "context_minus_target"):
        assert merged[section] == full[section], section
    assert merged["imported"] == [
        {
            "source": str(out / "report.json"),
            "command": "test",
            "machine": full["machine"],
            "seeds": {label: [0] for label in full["arms"]},
        }
    ]
    text = report_md.read_text()
    assert "## Seeds taken from earlier reports" in text and "Seed(s) 0 of every arm" in text
    assert (out2 / "word_maps.png").is_file()  # drawn from seed 1, the first seed with a run folder


def test_a_report_of_another_experiment_is_not_merged(compared, tmp_path) -> None:
    plan, out, _ = compared
    report = json.loads((out / "report.json").read_text())
    cases = {
        "lr": ("configs", lambda r: r["configs"][plan.arms[1].label]["optim"].__setitem__("lr", 0.5), "optim.lr"),
        "plan": ("plan", lambda r: r.__setitem__("plan", "masks"), "of sweep 'masks'"),
        "suite": ("suite", lambda r: r.__setitem__("suite", "quick"), "--suite quick"),
        "arm": ("arm", lambda r: r["metrics"].__setitem__("X", {}), "arm 'X' is not in this sweep"),
    }
    for name, (_, edit, needle) in cases.items():
        bad = json.loads(json.dumps(report))
        edit(bad)
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(bad))
        with pytest.raises(ConfigError, match=needle):
            run_compare(plan, 2, tmp_path / name, suite=TINY_SUITE, progress=False, merge_reports=[path])
        assert not (tmp_path / name / plan.arms[0].slug).exists(), "refused before any training"
    with pytest.raises(ConfigError, match="no such file"):
        run_compare(plan, 2, tmp_path / "x", suite=TINY_SUITE, progress=False, merge_reports=[tmp_path / "nope.json"])
