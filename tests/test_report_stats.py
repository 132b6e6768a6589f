"""Paired statistics of the comparison report: t quantiles, sign test, CIs, pairing by seed id.

The report tests build run folders by hand (eval.json, eval_context.json, metrics.jsonl, FAILED.txt),
so they run in a second and pin exact numbers without training anything.
"""

from __future__ import annotations

import json
import math
import statistics

import pytest

from tcjepa.app.compare import arm_config
from tcjepa.app.report import paired, write_report
from tcjepa.app.stats import mean_ci, min_sign_test_p, paired_summary, sign_test, t_abs_cdf, t_quantile
from tcjepa.app.sweeps import load_sweep

# Two-sided 95% and 99% critical values from any Student t table.
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 10: 2.228, 30: 2.042}
T99 = {2: 9.925, 4: 4.604, 10: 3.169}


@pytest.mark.parametrize("df", sorted(T95))
def test_t_quantile_matches_the_table(df) -> None:
    assert t_quantile(0.95, df) == pytest.approx(T95[df], abs=1e-3)
    if df in T99:
        assert t_quantile(0.99, df) == pytest.approx(T99[df], abs=1e-3)


def test_t_cdf_closed_forms() -> None:
    # df = 1 is Cauchy: P(|T| <= 1) = 1/2; df = 2: P(|T| <= t) = t / sqrt(2 + t^2).
    assert t_abs_cdf(1.0, 1) == pytest.approx(0.5)
    assert t_abs_cdf(3.0, 2) == pytest.approx(3 / math.sqrt(11))
    assert t_abs_cdf(0.0, 5) == 0.0 and t_abs_cdf(math.inf, 5) == 1.0
    # Large df tends to the normal: P(|Z| <= 1.96) = 0.95.
    assert t_abs_cdf(1.959964, 2000) == pytest.approx(0.95, abs=2e-4)
    with pytest.raises(ValueError, match="integer"):
        t_abs_cdf(1.0, 0)
    with pytest.raises(ValueError, match="between 0 and 1"):
        t_quantile(1.0, 3)


def test_sign_test_by_hand() -> None:
    assert sign_test([1.0] * 5) == pytest.approx(0.0625)  # 2 * (1/2)^5
    assert sign_test([-1.0] * 5) == pytest.approx(0.0625)  # two-sided: the sign does not matter
    assert sign_test([1.0, 1.0, 1.0]) == pytest.approx(0.25)
    # 4 of 5 positive: 2 * (C(5,0) + C(5,1)) / 32 = 12/32.
    assert sign_test([1, 2, 3, 4, -1]) == pytest.approx(0.375)
    # Ties are dropped: [+, +, 0, 0] is the 2-seed test, p = 2 * 1/4.
    assert sign_test([0.1, 0.2, 0.0, 0.0]) == pytest.approx(0.5)
    assert sign_test([1, -1]) == 1.0 and sign_test([0.0, 0.0]) is None
    assert min_sign_test_p(3) == pytest.approx(0.25) and min_sign_test_p(5) == pytest.approx(0.0625)


def test_mean_ci_by_hand() -> None:
    values = [1.0, 2.0, 3.0]  # mean 2, sd 1, n 3: half-width 4.303 / sqrt(3)
    lo, hi = mean_ci(values)
    assert lo < statistics.fmean(values) < hi
    assert (hi - lo) / 2 == pytest.approx(4.3027 / math.sqrt(3), abs=1e-3)
    assert mean_ci([5.0]) is None
    d = paired_summary([0.1])
    assert d["ci_low"] is None and d["n"] == 1 and d["std"] == 0.0


def test_pairing_is_by_seed_id_not_by_position() -> None:
    a = {0: {"m": 0.5}, 1: {"m": 0.9}, 2: {"m": 0.6}}
    b = {0: {"m": 0.6}, 2: {"m": 0.7}}  # seed 1 failed in this arm
    d = paired(a, b, "m")
    assert d["seeds"] == [0, 2] and d["n"] == 2
    assert d["mean"] == pytest.approx(0.1) and d["ahead"] == 2  # by position: -0.05 and 1 ahead
    assert d["ci_low"] == pytest.approx(0.1) and d["ci_high"] == pytest.approx(0.1)  # zero spread
    assert paired(a, {3: {"m": 1.0}}, "m") is None


def _run(folder, metrics, ema=None, context=None, step=3):
    folder.mkdir(parents=True)
    (folder / "eval.json").write_text(json.dumps({"metrics": metrics, "settings": {}}))
    if context is not None:
        (folder / "eval_context.json").write_text(json.dumps({"metrics": context, "settings": {}}))
    rows = [{"step": s, "loss": 1.0, **({"ema_init_share": ema * (2 - s / step)} if ema else {})} for s in (1, step)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def report(tmp_path):
    (tmp_path / "s.yaml").write_text(
        "base: tiny\nmethods: {A: {method: ijepa}, B: {method: ijepa}, C: {method: ijepa}}\nfloor: false\n"
    )
    plan = load_sweep(str(tmp_path / "s.yaml"))
    out = tmp_path / "out"
    shape_a, shape_b = {0: 0.5, 1: 0.9, 2: 0.6}, {0: 0.6, 2: 0.7}
    for s in range(3):
        _run(
            out / "a" / f"seed{s}",
            {"scene/shape/test": shape_a[s], "scene/count/test": 0.4},
            ema=0.01,
            context={"scene/shape/test": shape_a[s] - 0.2},
        )
        if s in shape_b:
            _run(out / "b" / f"seed{s}", {"scene/shape/test": shape_b[s], "scene/count/test": 0.4}, ema=0.2)
        _run(out / "c" / f"seed{s}", {"scene/shape/test": 0.5 + 0.1 * s, "scene/count/test": 0.3})
    (out / "b" / "seed1").mkdir()
    (out / "b" / "seed1" / "FAILED.txt").write_text("B, seed 1\nloss is nan\n")
    cfgs = {(0, a.slug): arm_config(plan, a, 0, out, []) for a in plan.arms}
    path = write_report(plan, 3, out, cfgs, "tiny", "test", {})
    return out, path.read_text(), json.loads((out / "report.json").read_text())


def test_report_pairs_by_seed_id_with_a_failed_seed(report) -> None:
    out, text, data = report
    assert data["metrics"]["B"]["scene/shape/test"]["values"] == {"0": 0.6, "2": 0.7}
    d = data["paired_vs_reference"]["B"]["scene/shape/test"]
    assert d["seeds"] == [0, 2] and d["mean"] == pytest.approx(0.1) and d["ahead"] == 2
    assert d["p_sign"] == pytest.approx(0.5)
    c = data["paired_vs_reference"]["C"]["scene/shape/test"]  # C - A = 0, -0.3, +0.1
    assert c["n"] == 3 and c["ahead"] == 1 and c["mean"] == pytest.approx(-0.2 / 3)
    assert c["ci_low"] < c["mean"] < c["ci_high"]
    half = 4.3027 * statistics.stdev([0.0, -0.3, 0.1]) / math.sqrt(3)
    assert c["ci_high"] - c["mean"] == pytest.approx(half, abs=1e-4)
    assert c["p_sign"] == pytest.approx(1.0)  # the tie is dropped: 1 up, 1 down
    row = next(line for line in text.splitlines() if line.startswith("| linear: ") and "(2/2)" in line)
    assert "10.0 ± 0.0 (2/2); CI [10.0, 10.0]; p 0.5" in row
    assert "(1/3); CI [" in row and "; p 1 |" in row


def test_report_warns_about_many_metrics_and_few_seeds(report) -> None:
    _, text, _ = report
    section = text.split("## Paired differences")[1].split("\n## ")[0]
    assert "Many metrics are compared at once" in section
    assert "smallest possible two-sided sign-test p is 0.25" in section
    assert "not evidence on their own" in section and "confidence intervals" in section


def test_report_shows_the_ema_init_share_and_warns(report) -> None:
    _, text, data = report
    setup = text.split("## Setup")[1].split("## Results")[0]
    assert "EMA init share at the end" in setup
    assert "A 1%" in setup and "B 20%" in setup and "C not logged" in setup
    assert "**B: the evaluated target encoder is still 20% its random initialisation" in setup
    assert "**A:" not in setup
    assert data["metrics"]["A"]["train/ema_init_share"]["mean"] == pytest.approx(0.01)  # the last record


def test_report_shows_the_context_encoder_beside_the_target(report) -> None:
    _, text, data = report
    section = text.split("## Target encoder beside the context encoder")[1].split("\n## ")[0]
    header = next(line for line in section.splitlines() if line.startswith("| metric |"))
    assert "A: target" in header and "A: context encoder" in header and "B:" not in header
    shape = next(line for line in section.splitlines() if line.startswith("| linear: "))
    mean_a = statistics.fmean([0.5, 0.9, 0.6])
    assert f"{100 * mean_a:.1f} ±" in shape and f"{100 * (mean_a - 0.2):.1f} ±" in shape
    assert data["context_encoder_metrics"]["A"]["scene/shape/test"]["mean"] == pytest.approx(mean_a - 0.2)
    assert data["context_minus_target"]["A"]["scene/shape/test"]["mean"] == pytest.approx(-0.2)
