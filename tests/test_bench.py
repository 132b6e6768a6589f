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


def test_data_only_bench_times_the_loader_and_sizes_the_gpu_appetite(tmp_path, capsys) -> None:
    import json

    from tcjepa.app.cli import main

    out = tmp_path / "b.jsonl"
    argv = ["bench", "tiny", "--data-only", "--steps", "3", "--out", str(out), "train.batch_size=4"]
    assert main([*argv, "train.steps=10", "data.num_workers=0"]) == 0
    rec = json.loads(out.read_text().splitlines()[-1])
    assert rec["kind"] == "data-only" and rec["loader_img_per_s"] > 0 and rec["batch_size"] == 4
    gpu = rec["gpu_H100_bf16_img_per_s_at_mfu_0.4"]
    assert gpu == pytest.approx(0.4 * 989e12 / rec["train_flops_per_img"])
    assert rec["loader_cores_per_gpu"] == pytest.approx(gpu / rec["loader_img_per_s"])


def test_bench_times_a_compiled_method(tiny_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    """``train.compile=true``: the compiled wrapper is what is timed. Like torch.compile's module, the
    stand-in has no truth value (``len()`` raises), which once made the bench fail before its first step."""
    import torch

    wrapped: list[torch.nn.Module] = []

    class Compiled(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.inner = inner
            self.calls = 0

        def __len__(self) -> int:
            raise TypeError(f"{type(self.inner).__name__} does not support len()")

        def forward(self, *args, **kwargs):
            self.calls += 1
            return self.inner(*args, **kwargs)

    def compile_(module, **kwargs):
        wrapped.append(Compiled(module))
        return wrapped[-1]

    monkeypatch.setattr(torch, "compile", compile_)
    records: list[dict] = []
    bench.run_bench(tiny_cfg("train.compile=true"), ["ijepa"], steps=2, rounds=1, emit=records.append)
    assert records[0]["step_ms"] > 0 and wrapped[0].calls == 4  # 2 warm-up + 2 timed steps ran compiled
