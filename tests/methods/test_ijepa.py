"""The method interface shared by the objectives: loss and metrics, EMA update, optimiser groups."""

from __future__ import annotations

import pytest
import torch

from tcjepa.config import ConfigError
from tcjepa.methods import METHODS, build_method
from tcjepa.methods.schedules import ema_at

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(params=["ijepa", "tcjepa"])
def method(request, tiny_cfg):
    torch.manual_seed(0)
    return build_method(tiny_cfg(f"method={request.param}"), text_dim=32 if request.param == "tcjepa" else None)


def test_forward_returns_loss_and_metrics(method, make_batch, add_text) -> None:
    out = method(add_text(make_batch()))
    loss, metrics = out.loss, out.logged()
    assert loss.ndim == 0 and loss.requires_grad and torch.isfinite(loss)
    for key in ("loss", "loss_pred", "loss_sparse", "loss_consistency"):
        assert key in metrics
    assert method.encoder is method.target_encoder
    assert all(not p.requires_grad for p in method.target_encoder.parameters())


def test_target_encoder_gets_no_gradient(method, make_batch, add_text) -> None:
    loss = method(add_text(make_batch())).loss
    loss.backward()
    assert all(p.grad is None for p in method.target_encoder.parameters())
    assert all(p.grad is not None for p in method.context_encoder.parameters())


def test_ema_update_is_exact(method) -> None:
    cfg = method.cfg
    with torch.no_grad():  # make the two encoders differ a lot, so a wrong momentum would show
        for p in method.context_encoder.parameters():
            p.add_(torch.randn_like(p))
    target = [p.detach().clone() for p in method.target_encoder.parameters()]
    context = [p.detach().clone() for p in method.context_encoder.parameters()]
    step = cfg.train.steps // 2
    m = ema_at(cfg, step)
    assert m == pytest.approx(0.998)
    method.after_step(step)
    for new, t, c in zip(method.target_encoder.parameters(), target, context):
        torch.testing.assert_close(new, m * t + (1 - m) * c, rtol=0, atol=1e-6)
    for p, c in zip(method.context_encoder.parameters(), context):
        assert torch.equal(p, c)  # the context encoder is untouched


def test_ema_moves_the_target_by_the_scheduled_momentum(method, make_batch, add_text) -> None:
    """target <- m * target + (1 - m) * context with m = ema_at(cfg, step), for two steps whose m differ."""
    cfg = method.cfg
    steps = (0, (3 * cfg.train.steps) // 4)
    momenta = [ema_at(cfg, s) for s in steps]
    assert momenta[0] != momenta[1] and all(m < 1 for m in momenta)  # so a wrong step or m would show
    # Even m from the neighbouring step moves the result by 3 * |dm|, far beyond the tolerance below.
    assert all(3 * abs(ema_at(cfg, s + 1) - m) > 1e-5 for s, m in zip(steps, momenta))
    method(add_text(make_batch())).loss.backward()  # context encoder and predictor hold gradients
    for k, (step, m) in enumerate(zip(steps, momenta)):
        with torch.no_grad():  # known, far-apart values: context ~ +3, target ~ -2, distinct per element
            for i, p in enumerate(method.context_encoder.parameters()):
                p.copy_(3.0 + k + torch.linspace(-1.0, 1.0, p.numel()).view_as(p) * (i % 5 + 1) / 5)
            for i, p in enumerate(method.target_encoder.parameters()):
                p.copy_(-2.0 - k + torch.linspace(1.0, -1.0, p.numel()).view_as(p) * (i % 3 + 1) / 3)
        target = [p.detach().clone() for p in method.target_encoder.parameters()]
        context = [p.detach().clone() for p in method.context_encoder.parameters()]
        predictor = [p.detach().clone() for p in method.predictor.parameters()]
        method.after_step(step)
        for (name, new), t, c in zip(method.target_encoder.named_parameters(), target, context):
            expected = (m * t.double() + (1.0 - m) * c.double()).float()  # the exact value, rounded once
            # float32 rounding only (a few ulp of |x| <= 6); |context - target| >= 3 everywhere.
            torch.testing.assert_close(new, expected, rtol=0, atol=2e-6, msg=f"{name} at step {step}")
            assert not new.requires_grad and new.grad is None, name
        for p, c in zip(method.context_encoder.parameters(), context):
            assert torch.equal(p, c)  # the context encoder is untouched
        assert all(torch.equal(p, q) for p, q in zip(method.predictor.parameters(), predictor))


def test_param_groups(method) -> None:
    groups = method.param_groups()
    decay = [g for g in groups if g.get("apply_wd", True)]
    no_decay = [g for g in groups if not g.get("apply_wd", True)]
    assert len(decay) == 1 and len(no_decay) == 1 and no_decay[0]["weight_decay"] == 0.0
    names = {id(p): n for n, p in method.named_parameters()}
    decayed = {names[id(p)] for p in decay[0]["params"]}
    not_decayed = {names[id(p)] for p in no_decay[0]["params"]}
    grouped = [names[id(p)] for g in groups for p in g["params"]]
    # Every trainable parameter exactly once; the EMA target encoder never.
    trainable = [n for n, p in method.named_parameters() if p.requires_grad]
    assert sorted(grouped) == sorted(trainable) and len(grouped) == len(set(grouped))
    assert not any(n.startswith("target_encoder.") for n in grouped)
    for n, p in method.named_parameters():
        if n in not_decayed:
            assert p.ndim <= 1, n
        elif n in decayed:
            assert p.ndim >= 2 and not n.endswith(".bias"), n
    assert any("norm" in n for n in not_decayed)
    for n in (
        "context_encoder.blocks.0.attn.qkv.weight",
        "predictor.blocks.0.mlp.fc1.weight",
        "predictor.embed.weight",
    ):
        assert n in decayed
    if "tcjepa" in type(method).__name__.lower():
        assert {"predictor.blocks.1.cond.k.weight", "predictor.blocks.1.cond.proj.weight"} <= decayed
        assert {"predictor.blocks.1.cond.k.bias", "predictor.blocks.1.cond.norm.weight"} <= not_decayed
    # AdamW accepts the groups and keeps weight decay off where asked.
    opt = torch.optim.AdamW(groups, lr=1e-3, weight_decay=0.04)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.04, 0.0]


def test_build_method_checks_its_arguments(tiny_cfg) -> None:
    assert set(METHODS) == {"ijepa", "tcjepa", "clip", "siglip"}
    # The text width comes from the config when not given (hashed encoder of the tiny preset: 32).
    assert build_method(tiny_cfg("method=tcjepa")).predictor.blocks[0].cond.k.in_features == 32
    with pytest.raises(ConfigError, match="did you mean 'ijepa'"):
        build_method(tiny_cfg("method=ijepaa"))
