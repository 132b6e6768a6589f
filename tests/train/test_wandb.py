"""train.wandb: the W&B run holds exactly the scalars of metrics.jsonl, under TensorBoard's tags, at their steps.

The first tests run everywhere: without wandb (the clear error) and with a stand-in ``wandb`` module put in
``sys.modules`` (what is handed to wandb). The last ones need the real package (``pip install -e '.[wandb]'``,
not part of ``dev``) and read the offline run back from its ``.wandb`` file.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import types
from pathlib import Path

import pytest

from tcjepa.config import ConfigError, load_config
from tcjepa.train import wandb_log
from tcjepa.train.loop import pretrain
from tcjepa.train.tensorboard import scalars_of

pytestmark = pytest.mark.usefixtures("single_thread")

RUN = (
    "train.threads=1",
    "train.steps=3",
    "train.batch_size=8",
    "train.log_every=1",
    "train.monitor_every=0",
    "train.tensorboard=false",
    "data.num_workers=0",
    "train.wandb=true",
)


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_train_wandb_without_the_package_fails_before_any_work(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed: find_spec is None, import fails
    assert not wandb_log.wandb_installed()
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError) as err:
        pretrain(load_config("tiny", [f"run.dir={run_dir}", *RUN]), progress=False)
    assert "train.wandb" in str(err.value) and "pip install 'tcjepa[wandb]'" in str(err.value)
    assert not run_dir.exists()  # nothing was built or written
    assert wandb_log.open_wandb(load_config("tiny", ["train.wandb=false"]), tmp_path) is None  # off: never imported


def test_wandb_mode_is_checked_with_the_config() -> None:
    with pytest.raises(ConfigError, match="train.wandb_mode"):
        load_config("tiny", ["train.wandb_mode=disabled"])


class _FakeRun:
    def __init__(self, **kwargs) -> None:
        self.init = kwargs
        self.logged: list[tuple[int, dict]] = []
        self.exit_code: int | None = None

    def log(self, data: dict, step: int) -> None:
        self.logged.append((step, dict(data)))

    def finish(self, exit_code: int | None = None) -> None:
        self.exit_code = exit_code


@pytest.fixture
def fake_wandb(monkeypatch) -> list[_FakeRun]:
    """A stand-in ``wandb`` module; returns the runs it started."""
    runs: list[_FakeRun] = []
    module = types.ModuleType("wandb")
    module.Settings = lambda **fields: fields

    def init(**kwargs) -> _FakeRun:
        runs.append(_FakeRun(**kwargs))
        return runs[-1]

    module.init = init
    monkeypatch.setitem(sys.modules, "wandb", module)
    monkeypatch.setattr(wandb_log, "wandb_installed", lambda: True)  # the stand-in has no import spec
    return runs


def test_a_record_becomes_its_tagged_finite_numbers_at_its_step(tmp_path: Path, fake_wandb) -> None:
    cfg = load_config("tiny", [f"run.dir={tmp_path}", "train.wandb=true", "train.wandb_project=p"])
    with wandb_log.open_wandb(cfg, tmp_path) as log:
        log.write(
            {
                "step": 7,
                "loss": 0.5,
                "lr": 1e-3,
                "rankme_patch": 12.0,
                "online/pointing": 0.25,
                "dead_zone": 0,
                "mask_context_kept": 3,
                "flag": True,
                "note": "text",
                "grad_norm": float("nan"),
            }
        )
    (run,) = fake_wandb
    assert run.logged == [
        (
            7,
            {
                "loss/loss": 0.5,
                "optim/lr": 1e-3,
                "monitor/rankme_patch": 12.0,
                "online/pointing": 0.25,
                "monitor/dead_zone": 0,
                "data/mask_context_kept": 3,
            },
        )
    ]
    assert run.exit_code == 0
    init = run.init
    assert init["project"] == "p" and init["mode"] == "offline" and init["dir"] == str(tmp_path)
    assert init["name"] == tmp_path.name and init["config"] == cfg.to_dict() and init["resume"] is None
    assert init["settings"]["x_disable_stats"] and init["settings"]["x_disable_meta"]  # nothing probes a network
    assert init["id"] == (tmp_path / wandb_log.RUN_ID_FILE).read_text().strip()


def test_a_resume_continues_the_run_id_a_fresh_start_draws_a_new_one(tmp_path: Path, fake_wandb) -> None:
    cfg = load_config("tiny", [f"run.dir={tmp_path}", "train.wandb=true", "train.wandb_mode=online"])
    wandb_log.open_wandb(cfg, tmp_path)
    wandb_log.open_wandb(cfg, tmp_path, resume=True)
    wandb_log.open_wandb(cfg, tmp_path)
    first, resumed, fresh = (run.init for run in fake_wandb)
    assert resumed["id"] == first["id"] and resumed["resume"] == "allow"
    assert fresh["id"] != first["id"]
    assert "x_disable_stats" not in first["settings"]  # online keeps W&B's system charts


def test_a_failed_training_finishes_the_run_as_failed(tmp_path: Path, fake_wandb) -> None:
    cfg = load_config("tiny", [f"run.dir={tmp_path}", "train.wandb=true"])
    with pytest.raises(RuntimeError), wandb_log.open_wandb(cfg, tmp_path):
        raise RuntimeError("a step failed")
    assert fake_wandb[0].exit_code == 1


def test_the_loop_logs_every_record_of_metrics_jsonl(tmp_path: Path, fake_wandb) -> None:
    run_dir = pretrain(load_config("tiny", [f"run.dir={tmp_path}", *RUN]), progress=False)
    (run,) = fake_wandb
    records = _records(run_dir)
    assert [r["step"] for r in records] == [0, 1, 2]
    assert run.logged == [(r["step"], scalars_of(r)) for r in records]
    assert "loss/loss" in run.logged[0][1]
    assert run.init["config"] == load_config("tiny", [f"run.dir={tmp_path}", *RUN]).to_dict()


# --- the real package: an offline run, read back from its transaction log ----------------------------------


def _wandb_records(path: Path) -> list:
    """The records of a ``.wandb`` file, decoded with wandb's own protobuf classes. The file is wandb's
    LevelDB-style log: a 7-byte header (``:W&B``, magic, version), then 32 KiB blocks of chunks, each with a
    7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:  # zero padding to the end of the block
            pos += left
            continue
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def _offline_runs(run_dir: Path) -> list[tuple[str, dict[int, dict[str, float]]]]:
    """Each offline run file in the run folder, oldest first: its run id and its history by step."""
    runs = []
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        run_id, history = None, {}
        for record in _wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run_id = record.run.run_id
            elif kind == "history":
                items = {item.key or "/".join(item.nested_key): item.value_json for item in record.history.item}
                history[record.history.step.num] = {k: json.loads(v) for k, v in items.items() if not k.startswith("_")}
        runs.append((run_id, history))
    return runs


@pytest.mark.dev
def test_an_offline_run_holds_metrics_jsonl_and_a_resume_continues_it(tmp_path: Path) -> None:
    pytest.importorskip("wandb")
    environ = dict(os.environ)
    overrides = [f"run.dir={tmp_path}", *RUN, "train.ckpt_every=2", "train.keep_every=2"]
    pretrain(load_config("tiny", overrides), progress=False)
    first = _records(tmp_path)
    ((run_id, history),) = _offline_runs(tmp_path)
    assert run_id == (tmp_path / wandb_log.RUN_ID_FILE).read_text().strip()
    assert history == {r["step"]: pytest.approx(scalars_of(r), rel=1e-12) for r in first}
    assert "loss/loss" in history[0]

    ckpts = tmp_path / "checkpoints"
    (ckpts / "step_2.pt").replace(ckpts / "latest.pt")  # as if killed after step 2's log, before its checkpoint
    pretrain(load_config("tiny", overrides), resume=True, progress=False)
    runs = _offline_runs(tmp_path)
    assert [rid for rid, _ in runs] == [run_id, run_id]  # the same W&B run, in a second offline file
    resumed = _records(tmp_path)[-1]
    assert runs[1][1] == {2: pytest.approx(scalars_of(resumed), rel=1e-12)}
    # Nothing set in the environment but wandb's own pointer to its service process, which wandb.init sets.
    changed = {k for k in os.environ.keys() | environ.keys() if os.environ.get(k) != environ.get(k)}
    assert changed <= {"WANDB_SERVICE"}
