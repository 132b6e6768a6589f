"""Options that buy memory or speed without changing the numbers: activation checkpointing, the AdamW kernel."""

from __future__ import annotations

import pytest
import torch

from tcjepa.config import load_config
from tcjepa.methods import build_method
from tcjepa.train.optim import adamw_impl, build_optimizer
from tests.conftest import tiny_method_and_batch

pytestmark = pytest.mark.usefixtures("single_thread")


def _loss_and_grads(method: str, checkpointing: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    _, model, batch = tiny_method_and_batch(method, f"train.activation_checkpointing={checkpointing}")
    saved = 0

    def count(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += t.numel()
        return t

    with torch.autograd.graph.saved_tensors_hooks(count, lambda t: t):
        loss = model(batch).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, saved


@pytest.mark.parametrize("method", ["ijepa", "tcjepa"])
def test_activation_checkpointing_gives_the_same_loss_and_gradients(method: str) -> None:
    loss, grads, stored = _loss_and_grads(method, checkpointing=False)
    loss_ac, grads_ac, stored_ac = _loss_and_grads(method, checkpointing=True)
    torch.testing.assert_close(loss_ac, loss, rtol=0, atol=1e-6)
    assert grads_ac.keys() == grads.keys() and len(grads) > 0
    for name, g in grads.items():
        torch.testing.assert_close(grads_ac[name], g, rtol=0, atol=1e-6, msg=name)
    # ... and it does what it is for: the forward keeps fewer elements for backward.
    assert stored_ac < stored / 2


def test_the_ema_target_is_not_checkpointed() -> None:
    cfg = load_config("tiny", ["train.activation_checkpointing=true"])
    model = build_method(cfg, cfg.text.hashed_dim)
    assert model.context_encoder.checkpointing and model.predictor.checkpointing
    assert not model.target_encoder.checkpointing


def test_adamw_kernel_is_fused_on_cuda_and_foreach_elsewhere() -> None:
    assert adamw_impl(torch.device("cuda")) == {"fused": True}
    assert adamw_impl(torch.device("cpu")) == {"foreach": True}
    cfg = load_config("tiny", [])
    opt = build_optimizer(build_method(cfg, cfg.text.hashed_dim), cfg, torch.device("cpu"))
    assert all(g["foreach"] and not g["fused"] for g in opt.param_groups)


def test_foreach_adamw_on_cpu_is_the_per_parameter_loop_bit_for_bit() -> None:
    """The CPU default keeps the arithmetic runs were fingerprinted with (scripts/loss_fingerprint.py)."""
    torch.manual_seed(0)
    shapes = [(64, 64), (64,), (3, 5, 7), (1000,)]
    start = [torch.randn(s) for s in shapes]
    finals = []
    for foreach in (False, True):
        params = [p.clone().requires_grad_() for p in start]
        groups = [{"params": params[:2], "weight_decay": 0.04}, {"params": params[2:], "weight_decay": 0.0}]
        opt = torch.optim.AdamW(groups, lr=1e-3, foreach=foreach)
        g = torch.Generator().manual_seed(1)
        for _ in range(20):
            for p in params:
                p.grad = torch.randn(p.shape, generator=g)
            opt.step()
        finals.append(params)
    for a, b in zip(*finals):
        assert torch.equal(a, b)
