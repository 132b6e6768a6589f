"""Sharded checkpoints (``train.checkpoint_format=sharded``): each FSDP rank writes its shards (DCP), atomically,
and the run resumes exactly, on the same or another number of processes, and is read by eval and export."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tcjepa.config import ConfigError, load_config
from tcjepa.train.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
from tcjepa.train.loop import pretrain
from tests.train.test_distributed import QUIET, STEPS, _assert_same_weights, _free_port, _rank_main, _resume_main

SHARDED = ("train.strategy=fsdp", "train.checkpoint_format=sharded")


def _overrides(run_dir: Path, *extra: str) -> list[str]:
    return [f"run.dir={run_dir}", *QUIET, *STEPS, *SHARDED, *extra]


def _losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 steps on 2 FSDP ranks, uninterrupted, a sharded checkpoint every 2 steps (step_2 kept)."""
    run_dir = tmp_path_factory.mktemp("sharded") / "straight"
    mp.spawn(_rank_main, args=(2, _free_port(), _overrides(run_dir)), nprocs=2, join=True)
    return run_dir


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same 4 steps in one process with a full checkpoint: the reference the existing tests use."""
    run_dir = tmp_path_factory.mktemp("full") / "one"
    before = torch.get_num_threads()
    try:
        pretrain(load_config("tiny", [f"run.dir={run_dir}", *QUIET, *STEPS]), progress=False)
    finally:
        torch.set_num_threads(before)
    return run_dir


def test_each_rank_writes_its_shards_into_one_folder_per_checkpoint(straight: Path, one_process: Path) -> None:
    ckpt = straight / "checkpoints"
    assert latest_checkpoint(ckpt) == ckpt / "latest.dcp"
    assert os.readlink(ckpt / "latest.dcp") == "step_4.dcp"
    assert sorted(p.name for p in ckpt.iterdir()) == ["latest.dcp", "step_2.dcp", "step_4.dcp"]  # no .pt, no .tmp
    files = {p.name for p in (ckpt / "step_4.dcp").iterdir()}
    assert {"__0_0.distcp", "__1_0.distcp", ".metadata", "tcjepa.pt"} <= files  # one file of shards per rank
    # Assembled without a process group, the shards are the weights one process trains on the whole batch.
    state = load_checkpoint(ckpt / "latest.dcp")
    assert state["step"] == 4 and state["config"]["train"]["checkpoint_format"] == "sharded"
    assert set(state["optimizer"]) == {"state", "param_groups"}
    _assert_same_weights(load_checkpoint(one_process / "checkpoints" / "latest.pt"), state)


def _crashing_rank_main(rank: int, world: int, port: int, overrides: list[str]) -> None:
    """A rank of the run that dies after the step-4 checkpoint's shards are written, before its rename."""
    import tcjepa.train.sharded as sharded

    real = sharded.publish

    def crash(tmp: Path, final: Path, keep_every: int) -> None:
        if final.name == "step_4.dcp":
            raise RuntimeError("injected crash between the write and the rename")
        real(tmp, final, keep_every)

    sharded.publish = crash
    _rank_main(rank, world, port, overrides)


def test_a_crash_before_the_rename_keeps_the_previous_checkpoint_and_resumes_exactly(
    straight: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "crashed"
    with pytest.raises(Exception, match="injected crash"):
        mp.spawn(_crashing_rank_main, args=(2, _free_port(), _overrides(run_dir)), nprocs=2, join=True)
    ckpt = run_dir / "checkpoints"
    assert (ckpt / ".step_4.dcp.tmp" / ".metadata").is_file()  # the shards were written ...
    assert not (ckpt / "step_4.dcp").exists()  # ... but never became a checkpoint
    assert os.readlink(ckpt / "latest.dcp") == "step_2.dcp"
    assert load_checkpoint(ckpt / "latest.dcp", with_optimizer=False)["step"] == 2

    # Resuming on 2 ranks continues from step 2 and trains exactly what the uninterrupted run trained.
    mp.spawn(_resume_main, args=(2, _free_port(), _overrides(run_dir)), nprocs=2, join=True)
    assert sorted(p.name for p in ckpt.iterdir()) == ["latest.dcp", "step_2.dcp", "step_4.dcp"]  # tmp removed
    assert _losses(run_dir) == _losses(straight)
    a, b = load_checkpoint(ckpt / "latest.dcp"), load_checkpoint(straight / "checkpoints" / "latest.dcp")
    assert a["method"].keys() == b["method"].keys()
    for key, value in a["method"].items():
        assert torch.equal(value, b["method"][key]), key
    for name, value in a["optimizer"]["state"].items():
        for k, v in value.items():
            assert torch.equal(v, b["optimizer"]["state"][name][k]), (name, k)


def test_a_two_rank_sharded_checkpoint_resumes_in_one_process(straight: Path, tmp_path: Path) -> None:
    """DCP reshards: the step_2 shards of 2 ranks load whole into one process, which continues the run."""
    run_dir = tmp_path / "one"
    (run_dir / "checkpoints").mkdir(parents=True)
    shutil.copytree(straight / "checkpoints" / "step_2.dcp", run_dir / "checkpoints" / "step_2.dcp")
    os.symlink("step_2.dcp", run_dir / "checkpoints" / "latest.dcp")
    before = torch.get_num_threads()
    try:
        pretrain(load_config("tiny", _overrides(run_dir)), resume=True, progress=False)
    finally:
        torch.set_num_threads(before)
    resumed_losses, straight_losses = _losses(run_dir), _losses(straight)
    assert sorted(resumed_losses) == [2, 3]
    for step, loss in resumed_losses.items():  # one process sums in another order: rounding only
        assert loss == pytest.approx(straight_losses[step], rel=1e-5, abs=1e-6)
    resumed = load_checkpoint(run_dir / "checkpoints" / "latest.dcp")
    _assert_same_weights(load_checkpoint(straight / "checkpoints" / "latest.dcp"), resumed)


def test_eval_and_export_read_a_sharded_run(straight: Path, one_process: Path, tmp_path: Path) -> None:
    from tcjepa import load_encoder
    from tcjepa.app.runs import checkpoint_step, eval_target, export_run, is_run_dir, load_run_encoder

    assert is_run_dir(straight) and checkpoint_step(straight) == 4
    target = eval_target(straight)
    assert target.info["step"] == 4
    exported = load_encoder(export_run(straight, tmp_path / "enc"))
    _, reference = load_run_encoder(one_process)  # trained on the same batches in one process, saved whole
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(exported(x), reference.eval()(x), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(target.encoder.eval()(x), reference(x), atol=1e-4, rtol=1e-4)


def test_sharded_checkpoints_need_fsdp() -> None:
    for strategy in ("ddp", None):
        extra = [f"train.strategy={strategy}"] if strategy else []
        with pytest.raises(ConfigError, match=r"'train.checkpoint_format'=sharded needs train.strategy=fsdp"):
            load_config("tiny", ["train.checkpoint_format=sharded", *extra])
    assert load_config("tiny", list(SHARDED)).train.checkpoint_format == "sharded"
    assert load_config("tiny", []).train.checkpoint_format == "full"


def _fake_checkpoint(ckpt: Path, step: int, tag: str = "") -> Path:
    tmp = ckpt / f".step_{step}.dcp.tmp"
    tmp.mkdir(parents=True)
    torch.save({"format": 1, "step": step, "tag": tag}, tmp / "tcjepa.pt")
    return tmp


def test_publish_treats_folders_as_the_full_format_treats_files(tmp_path: Path) -> None:
    """latest.dcp moves to each new folder; the one it leaves is deleted unless train.keep_every keeps it."""
    from tcjepa.train.checkpoint import read_meta
    from tcjepa.train.sharded import publish

    ckpt = tmp_path / "checkpoints"
    for step in (2, 3, 4, 6):
        publish(_fake_checkpoint(ckpt, step), ckpt / f"step_{step}.dcp", keep_every=2)
        assert os.readlink(ckpt / "latest.dcp") == f"step_{step}.dcp"
    assert sorted(p.name for p in ckpt.iterdir()) == ["latest.dcp", "step_2.dcp", "step_4.dcp", "step_6.dcp"]
    # The same step again (a resume with nothing left to train): its non-tensor part is replaced in place.
    publish(_fake_checkpoint(ckpt, 6, "again"), ckpt / "step_6.dcp", keep_every=2)
    assert read_meta(ckpt / "latest.dcp")["tag"] == "again"
    # A complete folder that never got the link (a crash after the rename) is replaced by the next save of it.
    (ckpt / "step_8.dcp").mkdir()
    publish(_fake_checkpoint(ckpt, 8, "new"), ckpt / "step_8.dcp", keep_every=0)
    assert read_meta(ckpt / "latest.dcp")["tag"] == "new"
    assert sorted(p.name for p in ckpt.iterdir()) == ["latest.dcp", "step_2.dcp", "step_4.dcp", "step_8.dcp"]


def test_a_dangling_latest_link_says_what_to_do(tmp_path: Path) -> None:
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    os.symlink("step_9.dcp", ckpt / "latest.dcp")
    with pytest.raises(CheckpointError, match="step_9.dcp, which is missing"):
        load_checkpoint(latest_checkpoint(ckpt))
