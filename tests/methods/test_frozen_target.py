"""model.target=frozen:PATH: JEPA targets from a frozen, previously trained teacher (docs/design.md §4.16)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from tcjepa import load_encoder
from tcjepa.app.runs import eval_target, export_run, has_context_encoder, load_run_method
from tcjepa.config import ConfigError, load_config
from tcjepa.data.stream import PretrainStream
from tcjepa.eval.markdown import _encoder_lines
from tcjepa.export import export_encoder
from tcjepa.methods import build_method
from tcjepa.models.vit import VisionTransformer, ViTSpec, vit_spec
from tcjepa.train.checkpoint import load_checkpoint
from tcjepa.train.loop import pretrain
from tcjepa.train.optim import build_optimizer
from tcjepa.train.step import train_step

pytestmark = pytest.mark.usefixtures("single_thread")
QUIET = ("train.threads=1", "train.monitor_every=0", "data.num_workers=0", "train.batch_size=4")


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory) -> Path:
    """An I-JEPA run trained for 2 steps: its EMA target encoder is the teacher."""
    run = tmp_path_factory.mktemp("teacher") / "run"
    pretrain(load_config("tiny", ["method=ijepa", f"run.dir={run}", "train.steps=2", *QUIET]), progress=False)
    return run


@pytest.fixture(scope="module")
def teacher_export(teacher_run: Path, tmp_path_factory) -> Path:
    return export_run(teacher_run, tmp_path_factory.mktemp("teacher-export") / "enc")


def _cfg(method: str, target: str | Path, *extra: str):
    return load_config("tiny", [f"method={method}", f"model.target=frozen:{target}", *QUIET, *extra])


def _batch(cfg, method, index: int = 0) -> dict:
    batch = PretrainStream(cfg, method.batch_spec(cfg))[index]
    batch.pop("stats")
    return batch


def _run_teacher(run: Path) -> VisionTransformer:
    """The run's EMA target encoder, built here from its config and checkpoint (not by methods/teacher.py)."""
    cfg = load_config(str(run / "config.yaml"))
    e = cfg.model.encoder
    encoder = VisionTransformer(
        vit_spec(e.size, cfg.data.image_size, e.patch_size, e.embed_dim, e.depth, e.num_heads, e.mlp_ratio)
    )
    state = load_checkpoint(run / "checkpoints" / "latest.pt")["method"]
    encoder.load_state_dict({k.removeprefix("target_encoder."): v for k, v in state.items() if "target_enc" in k})
    return encoder.eval()


@pytest.mark.parametrize("name", ["ijepa", "tcjepa"])
def test_trains_with_finite_loss_and_the_teacher_never_changes(name: str, teacher_run: Path) -> None:
    cfg = _cfg(name, teacher_run)
    torch.manual_seed(0)
    method = build_method(cfg)
    assert method.frozen_target and not method.has_ema_target and not hasattr(method, "target_encoder")
    teacher = method.target_network
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    context_before = {k: v.clone() for k, v in method.context_encoder.state_dict().items()}
    optimizer = build_optimizer(method, cfg, torch.device("cpu"))
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert not in_optimizer & {id(p) for p in teacher.parameters()}
    assert not any(p.requires_grad for p in teacher.parameters())
    assert not any(k.startswith(("target_encoder.", "_teacher")) for k in method.state_dict())
    method.train()
    for step in range(3):
        result = train_step(method, method, optimizer, _batch(cfg, method, step), step)
        assert result.finite and torch.isfinite(result.loss)
        assert not teacher.training  # method.train() does not reach it
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in teacher.parameters())
    assert any(not torch.equal(v, context_before[k]) for k, v in method.context_encoder.state_dict().items())
    assert method.encoder is method.context_encoder


@pytest.mark.parametrize("source", ["export", "run"])
def test_targets_are_the_teachers_features_on_the_full_image(source: str, teacher_run, teacher_export) -> None:
    path = teacher_export if source == "export" else teacher_run
    independent = load_encoder(teacher_export) if source == "export" else _run_teacher(teacher_run)
    cfg = _cfg("ijepa", path)
    method = build_method(cfg)
    images = _batch(cfg, method)["images"]
    with torch.no_grad():
        h = independent(images)
    expected = F.layer_norm(h.float(), (h.shape[-1],))
    torch.testing.assert_close(method.targets(images), expected, rtol=0, atol=0)
    # And not what the student's own (untrained) encoder would give.
    assert not torch.allclose(method.targets(images), F.layer_norm(method.context_encoder(images), (64,)))


def test_the_student_starts_as_it_would_with_an_ema_target(teacher_export: Path) -> None:
    """Loading the teacher draws no random numbers: only the target source differs between the two runs."""
    torch.manual_seed(0)
    frozen = build_method(_cfg("ijepa", teacher_export))
    torch.manual_seed(0)
    ema = build_method(load_config("tiny", ["method=ijepa", *QUIET]))
    for key, value in frozen.state_dict().items():
        if not key.startswith("teacher_record"):
            assert torch.equal(value, ema.state_dict()[key]), key


def test_a_teacher_of_another_width_gets_a_predictor_of_that_width(tmp_path: Path) -> None:
    torch.manual_seed(3)
    wide = export_encoder(VisionTransformer(ViTSpec(32, 4, 48, 2, 2)), tmp_path / "wide")
    cfg = _cfg("tcjepa", wide)
    method = build_method(cfg)
    assert method.predictor.out.out_features == 48 and method.predictor.embed.in_features == 64
    out = method(_batch(cfg, method), diagnostics=True)
    assert torch.isfinite(out.loss)
    out.loss.backward()


def test_resume_is_exact_and_refuses_a_changed_teacher(tmp_path: Path, teacher_export: Path) -> None:
    teacher = tmp_path / "teacher"
    shutil.copytree(teacher_export, teacher)
    steps = ("train.steps=4", "train.log_every=1", "train.ckpt_every=2", "train.keep_every=2")
    straight_dir, resumed_dir = tmp_path / "straight", tmp_path / "resumed"
    pretrain(_cfg("ijepa", teacher, f"run.dir={straight_dir}", *steps), progress=False)
    straight = load_checkpoint(straight_dir / "checkpoints" / "latest.pt")
    assert straight["method"]["teacher_record._extra_state"]["path"] == str(teacher)
    assert not any(k.startswith("target_encoder.") for k in straight["method"])
    records = [json.loads(x) for x in (straight_dir / "metrics.jsonl").read_text().splitlines()]
    assert records and all("ema" not in r and "ema_init_share" not in r for r in records)
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)

    (resumed_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(straight_dir / "checkpoints" / "step_2.pt", resumed_dir / "checkpoints" / "latest.pt")
    cfg = _cfg("ijepa", teacher, f"run.dir={resumed_dir}", *steps)
    pretrain(cfg, resume=True, progress=False)
    resumed = load_checkpoint(resumed_dir / "checkpoints" / "latest.pt")
    assert resumed["method"].keys() == straight["method"].keys()
    for key, value in straight["method"].items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, resumed["method"][key]), key

    # The teacher's file changes (retrained, replaced): resuming against it is refused.
    weights = load_file(str(teacher / "model.safetensors"))
    weights["norm.weight"] = weights["norm.weight"] + 1e-3
    save_file(weights, str(teacher / "model.safetensors"))
    shutil.copy(straight_dir / "checkpoints" / "step_2.pt", resumed_dir / "checkpoints" / "latest.pt")
    with pytest.raises(ConfigError, match="not the ones this checkpoint was trained against"):
        pretrain(cfg, resume=True, progress=False)


def test_eval_and_export_read_the_context_encoder(tmp_path: Path, teacher_export: Path) -> None:
    run = tmp_path / "student"
    pretrain(_cfg("ijepa", teacher_export, f"run.dir={run}", "train.steps=2"), progress=False)
    _, method = load_run_method(run)
    assert not has_context_encoder(method)  # compare evaluates it once, as eval.json
    target = eval_target(run)
    assert target.encoder is target.method.context_encoder
    assert target.info["encoder"] == "context" and target.info["frozen_teacher"] == str(teacher_export)
    context = eval_target(run, encoder="context")
    assert context.encoder is context.method.context_encoder and context.info["encoder"] == "context"
    lines = _encoder_lines(target.info)
    assert any("frozen teacher" in line and str(teacher_export) in line for line in lines)  # eval.md says so
    out = export_run(run, tmp_path / "exported")
    assert json.loads((out / "config.json").read_text())["encoder"] == "context"
    saved = load_checkpoint(run / "checkpoints" / "latest.pt")["method"]
    exported = load_file(str(out / "model.safetensors"))
    for key, value in exported.items():
        assert torch.equal(value, saved[f"context_encoder.{key}"]), key


def test_clear_errors(tmp_path: Path, teacher_run: Path, teacher_export: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        build_method(_cfg("ijepa", tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="neither a tcjepa run folder"):
        build_method(_cfg("ijepa", tmp_path / "empty"))
    with pytest.raises(ConfigError, match=r"sees 32px images in 4px patches .* data.image_size=64"):
        build_method(_cfg("ijepa", teacher_export, "data.image_size=64"))
    with pytest.raises(ConfigError, match=r"model.encoder.patch_size=8"):
        build_method(_cfg("ijepa", teacher_run, "model.encoder.patch_size=8"))
    with pytest.raises(ConfigError, match="predicts no targets"):
        build_method(_cfg("clip", teacher_export))
    with pytest.raises(ConfigError, match="must be ema or frozen:PATH"):
        load_config("tiny", ["model.target=frozen"])
    with pytest.raises(ConfigError, match="must be ema or frozen:PATH"):
        load_config("tiny", ["model.target=emma"])
