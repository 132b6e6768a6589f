"""Two CPU processes (gloo) under DDP train exactly what one process trains on the same global batch."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tcjepa.config import load_config
from tcjepa.train.checkpoint import load_checkpoint
from tcjepa.train.loop import pretrain

STEPS = ("train.steps=4", "train.batch_size=8", "train.log_every=1", "train.ckpt_every=2", "train.keep_every=2")
QUIET = ("train.threads=1", "train.monitor_every=0", "data.num_workers=0")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, overrides: list[str]) -> None:
    os.environ.update(
        {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world)}
        | {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    )
    pretrain(load_config("tiny", overrides), progress=False)


def _run(world: int, run_dir: Path, *extra: str) -> dict:
    overrides = [f"run.dir={run_dir}", *QUIET, *STEPS, *extra]
    if world == 1:
        pretrain(load_config("tiny", overrides), progress=False)
    else:
        mp.spawn(_rank_main, args=(world, _free_port(), overrides), nprocs=world, join=True)
    return load_checkpoint(run_dir / "checkpoints" / "latest.pt")


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    assert a["method"].keys() == b["method"].keys()
    for key, value in a["method"].items():
        other = b["method"][key]
        if not isinstance(value, torch.Tensor):  # extra state (a frozen teacher's path and hash)
            assert value == other, key
            continue
        if key.startswith("text_head.") and key.endswith("attn.qkv.bias"):
            # The key bias shifts every logit of a query alike, so softmax ignores it: its gradient is zero
            # but for rounding, which differs with the split, and Adam scales that noise up to full steps.
            # The contrastive text head's noise is large enough to show within 4 steps; compare q and v.
            width = value.shape[0] // 3
            value, other = (
                torch.cat([value[:width], value[2 * width :]]),
                torch.cat([other[:width], other[2 * width :]]),
            )
        torch.testing.assert_close(value, other, atol=1e-5, rtol=1e-5, msg=key)


# clip and siglip: features gathered from both ranks with their gradient, so the negatives are the global
# batch's and DDP's averaged gradient is the one-process gradient (losses/contrastive.py).
@pytest.mark.parametrize("method", ["ijepa", "tcjepa", "clip", "siglip"])
def test_two_rank_ddp_equals_one_process_on_the_global_batch(tmp_path: Path, method: str) -> None:
    one = _run(1, tmp_path / "one", f"method={method}")
    two = _run(2, tmp_path / "two", f"method={method}")
    _assert_same_weights(one, two)
    # Only rank 0 writes: one log line per step, the loss of the whole global batch (mean over ranks).
    lines = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    straight = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [0, 1, 2, 3]
    for a, b in zip(lines, straight):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-6)


def test_a_two_rank_checkpoint_resumes_in_one_process(tmp_path: Path) -> None:
    """DDP checkpoints are plain state dicts: resuming on another number of processes continues exactly."""
    straight = _run(1, tmp_path / "straight")
    _run(2, tmp_path / "two")
    resumed_dir = tmp_path / "resumed"
    (resumed_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(tmp_path / "two" / "checkpoints" / "step_2.pt", resumed_dir / "checkpoints" / "latest.pt")
    cfg = load_config("tiny", [f"run.dir={resumed_dir}", *QUIET, *STEPS])
    pretrain(cfg, resume=True, progress=False)
    _assert_same_weights(straight, load_checkpoint(resumed_dir / "checkpoints" / "latest.pt"))


def test_batch_not_divisible_by_ranks_is_refused(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="not divisible by 2 processes"):
        _run(2, tmp_path / "odd", "train.batch_size=7")


@pytest.mark.parametrize("method", ["ijepa", "tcjepa", "clip"])
def test_two_rank_fsdp_equals_one_process(tmp_path: Path, method: str) -> None:
    """FSDP2 shards blocks, encoders (the EMA target too) and predictor; the step is still the same step."""
    one = _run(1, tmp_path / "one", f"method={method}")
    two = _run(2, tmp_path / "fsdp", f"method={method}", "train.strategy=fsdp")
    _assert_same_weights(one, two)  # the checkpoint holds full tensors, gathered from the shards


def test_monitors_run_under_fsdp(tmp_path: Path) -> None:
    """The fixed-batch monitor calls method.encoder outside the method's forward: under FSDP the method's own
    (root) parameters must be gathered for it, or the patch embedding meets sharded weights and the run
    stops at its first monitored step. Monitoring changes no weight."""
    one = _run(1, tmp_path / "one", "method=tcjepa", "train.monitor_every=1")
    two = _run(2, tmp_path / "fsdp", "method=tcjepa", "train.monitor_every=1", "train.strategy=fsdp")
    _assert_same_weights(one, two)
    rows = [json.loads(line) for line in (tmp_path / "fsdp" / "metrics.jsonl").read_text().splitlines()]
    assert all("rankme" in r and "text_usage" in r for r in rows if "loss" in r)


def test_checkpoints_move_between_strategies_and_process_counts(tmp_path: Path) -> None:
    """A one-process checkpoint resumes under 2-rank FSDP, and an FSDP one in one process, exactly."""
    straight = _run(1, tmp_path / "straight")
    for source, world, extra in ((straight, 2, "train.strategy=fsdp"), (None, 1, "train.strategy=ddp")):
        if source is None:
            _run(2, tmp_path / "fsdp-src", "train.strategy=fsdp")
            src = tmp_path / "fsdp-src" / "checkpoints" / "step_2.pt"
        else:
            src = tmp_path / "straight" / "checkpoints" / "step_2.pt"
        resumed_dir = tmp_path / f"resumed-{world}"
        (resumed_dir / "checkpoints").mkdir(parents=True)
        shutil.copy(src, resumed_dir / "checkpoints" / "latest.pt")
        overrides = [f"run.dir={resumed_dir}", *QUIET, *STEPS, extra]
        if world == 1:
            pretrain(load_config("tiny", overrides), resume=True, progress=False)
        else:
            mp.spawn(_resume_main, args=(world, _free_port(), overrides), nprocs=world, join=True)
        _assert_same_weights(straight, load_checkpoint(resumed_dir / "checkpoints" / "latest.pt"))


def _resume_main(rank: int, world: int, port: int, overrides: list[str]) -> None:
    os.environ.update(
        {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world)}
        | {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    )
    pretrain(load_config("tiny", overrides), resume=True, progress=False)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_a_frozen_teacher_under_two_ranks_equals_one_process(tmp_path: Path, strategy: str) -> None:
    """The frozen teacher is inference-only and outside the wrapped modules: each rank reads it from PATH."""
    from tcjepa.export import export_encoder
    from tcjepa.models.vit import VisionTransformer, ViTSpec

    torch.manual_seed(5)
    teacher = export_encoder(VisionTransformer(ViTSpec(32, 4, 48, 2, 2)), tmp_path / "teacher")
    extra = ("method=ijepa", f"model.target=frozen:{teacher}", "train.steps=2")
    one = _run(1, tmp_path / "one", *extra)
    two = _run(2, tmp_path / "two", *extra, f"train.strategy={strategy}")
    _assert_same_weights(one, two)
    assert one["method"]["teacher_record._extra_state"] == two["method"]["teacher_record._extra_state"]
