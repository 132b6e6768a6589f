"""``tcjepa bench`` times the loop's own step and reports its phases beside the step time."""

from __future__ import annotations

import pytest

from tcjepa.app import bench
from tcjepa.train import step as step_module

pytestmark = pytest.mark.usefixtures("single_thread")


def test_bench_times_the_training_step_and_its_phases(tiny_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = step_module.train_step

    def counted(*args, **kwargs):
        calls.append(kwargs["accum_steps"])
        return real(*args, **kwargs)

    monkeypatch.setattr(bench, "train_step", counted)
    records: list[dict] = []
    bench.run_bench(tiny_cfg("train.accum_steps=2"), ["ijepa"], steps=2, rounds=1, emit=records.append)
    (rec,) = records
    assert calls == [2] * 5  # 2 warm-up, 2 timed, 1 for memory: every one the loop's step
    for key in ("step_ms", "img_per_s", "peak_mem_mb", "step_ms_iqr", "data_ms_warm_cache", "flops_per_img"):
        assert rec[key] is not None, key
    assert rec["accum_steps"] == 2
    assert list(rec["phase_ms"]) == ["forward", "backward", "clip", "optimizer", "ema"]
    assert sum(rec["phase_ms"].values()) <= rec["step_ms"] * 1.5  # medians of parts: near the step, not above
