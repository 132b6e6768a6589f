"""CUDA checks (marked ``gpu``; skipped without CUDA): the GPU computes what the CPU computes, bf16 stays finite,
torch.compile and the fused optimizer run. benchmarks/gpu/check.sh runs them on a lent GPU machine."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tcjepa.config import load_config
from tcjepa.data.batch import to_device
from tcjepa.models.vit import Block
from tcjepa.train.optim import build_optimizer
from tcjepa.train.step import autocast_for, train_step
from tests.conftest import tiny_method_and_batch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def full_fp32() -> Iterator[None]:
    """No TF32 in matmuls or convolutions (cuDNN allows it by default), so fp32 on GPU is comparable to CPU."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _loss_and_grads(model: torch.nn.Module, batch: dict, autocast=None) -> tuple[torch.Tensor, dict]:
    model.zero_grad(set_to_none=True)
    with autocast() if autocast else torch.autocast("cpu", enabled=False):
        loss = model(batch).loss
    loss.backward()
    return loss.detach().cpu(), {n: p.grad.detach().cpu() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("method", ["ijepa", "tcjepa"])
def test_cuda_forward_and_backward_equal_the_cpu(method: str) -> None:
    _, model, batch = tiny_method_and_batch(method)
    loss, grads = _loss_and_grads(model, batch)
    loss_gpu, grads_gpu = _loss_and_grads(copy.deepcopy(model).to(CUDA), to_device(batch, CUDA))
    torch.testing.assert_close(loss_gpu, loss, rtol=1e-4, atol=1e-5)
    assert grads_gpu.keys() == grads.keys()
    for name, g in grads.items():
        torch.testing.assert_close(grads_gpu[name], g, rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.parametrize("method", ["ijepa", "tcjepa"])
def test_bf16_autocast_steps_stay_finite_and_near_fp32(method: str) -> None:
    cfg, model, batch = tiny_method_and_batch(method)
    model, batch = model.to(CUDA), to_device(batch, CUDA)
    fp32_loss, _ = _loss_and_grads(model, batch)
    opt = build_optimizer(model, cfg, CUDA)
    assert all(g["fused"] for g in opt.param_groups)  # the fused kernel on CUDA
    for step in range(3):
        result = train_step(model, model, opt, batch, step, autocast=autocast_for(CUDA, "bf16"))
        assert result.finite, f"step {step}: loss {float(result.loss)}, grad norm {float(result.grad_norm)}"
        if step == 0:
            assert float(result.loss) == pytest.approx(float(fp32_loss), rel=5e-2)


def test_activation_checkpointing_on_cuda_gives_the_same_gradients() -> None:
    _, plain, batch = tiny_method_and_batch("tcjepa")
    _, ckpt, _ = tiny_method_and_batch("tcjepa", "train.activation_checkpointing=true")
    batch = to_device(batch, CUDA)
    loss, grads = _loss_and_grads(plain.to(CUDA), batch)
    loss_ac, grads_ac = _loss_and_grads(ckpt.to(CUDA), batch)
    torch.testing.assert_close(loss_ac, loss, rtol=0, atol=1e-6)
    for name, g in grads.items():
        torch.testing.assert_close(grads_ac[name], g, rtol=0, atol=1e-6, msg=name)


def test_torch_compile_of_a_block_runs_and_matches_eager() -> None:
    torch.manual_seed(0)
    block = Block(64, 2).to(CUDA)
    x = torch.randn(4, 16, 64, device=CUDA)
    compiled = torch.compile(block)
    torch.testing.assert_close(compiled(x), block(x), rtol=1e-4, atol=1e-5)
    compiled(x).sum().backward()  # and its backward


def test_the_loop_trains_on_one_gpu(tmp_path: Path) -> None:
    from tcjepa.train.checkpoint import load_checkpoint
    from tcjepa.train.loop import pretrain

    overrides = [f"run.dir={tmp_path}", "train.device=cuda", "train.precision=bf16", "train.steps=4"]
    overrides += ["train.batch_size=8", "train.log_every=1", "train.monitor_every=2"]
    run = pretrain(load_config("tiny", overrides), progress=False)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 4
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["step"] == 4
