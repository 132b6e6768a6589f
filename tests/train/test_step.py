"""The shared training step: accumulation equals one big batch, a non-finite step changes nothing, timers."""

from __future__ import annotations

import copy
from contextlib import contextmanager

import pytest
import torch

from tcjepa.config import ConfigError, load_config
from tcjepa.methods import build_method
from tcjepa.train.step import split_batch, train_step
from tcjepa.train.timing import PhaseTimers
from tests.conftest import NanGradient, tiny_batch, with_text

pytestmark = pytest.mark.usefixtures("single_thread")


def _setup(method: str, batch_size: int = 4):
    # No sparsity warm-up, so TC-JEPA's L_sparse and L_consistency reach the gradient at step 0 too.
    cfg = load_config("tiny", [f"method={method}", "loss.sparse_warmup_steps=0", "optim.grad_clip=1.0"])
    torch.manual_seed(0)
    model = build_method(cfg, cfg.text.hashed_dim if method == "tcjepa" else None)
    batch = tiny_batch(batch_size=batch_size)
    if method == "tcjepa":
        batch = with_text(batch, text_dim=cfg.text.hashed_dim)  # every image has all its captions
    batch["step"] = 0
    return cfg, model, batch


def _optimizer(cfg, model) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.param_groups(), lr=1e-3, betas=cfg.optim.betas, weight_decay=0.05)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("method", ["ijepa", "tcjepa"])
def test_two_micro_batches_give_the_step_of_the_whole_batch(method: str) -> None:
    cfg, whole, batch = _setup(method)
    micro = copy.deepcopy(whole)
    before = _state(whole)
    clip = cfg.optim.grad_clip
    one = train_step(whole, whole, _optimizer(cfg, whole), batch, 0, accum_steps=1, clip=clip)
    two = train_step(micro, micro, _optimizer(cfg, micro), batch, 0, accum_steps=2, clip=clip)
    assert one.finite and two.finite
    # The loss and gradient (a 1/accum_steps scale would show here: AdamW's update is nearly scale-free).
    torch.testing.assert_close(two.loss, one.loss, rtol=0, atol=1e-6)
    torch.testing.assert_close(two.grad_norm, one.grad_norm, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(two.metrics["loss_pred"], one.metrics["loss_pred"], rtol=0, atol=1e-6)
    for (name, p), q in zip(whole.named_parameters(), micro.parameters()):
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-7, msg=name)
    after, moved = _state(whole), 0.0
    for name, value in _state(micro).items():
        torch.testing.assert_close(value, after[name], rtol=0, atol=1e-6, msg=name)
        moved = max(moved, float((after[name].float() - before[name].float()).abs().max()))
    assert moved > 1e-4  # the step did change the weights, so equal weights mean something
    if method == "tcjepa":
        assert float(one.metrics["loss_sparse"]) > 0


def test_no_sync_wraps_all_but_the_last_micro_step() -> None:
    cfg, model, batch = _setup("ijepa", batch_size=6)

    class Wrapper(torch.nn.Module):  # what DDP offers: forward plus a no_sync() context manager
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner, self.syncing, self.seen = inner, True, []

        def forward(self, part: dict, diagnostics: bool = False):
            self.seen.append((part["images"].shape[0], self.syncing))
            return self.inner(part, diagnostics)

        @contextmanager
        def no_sync(self):
            self.syncing = False
            try:
                yield
            finally:
                self.syncing = True

    wrapper = Wrapper(model)
    train_step(model, wrapper, _optimizer(cfg, model), batch, 0, accum_steps=3)
    assert wrapper.seen == [(2, False), (2, False), (2, True)]


def test_split_batch_cuts_tensors_and_shares_the_rest() -> None:
    batch = {**with_text(tiny_batch(batch_size=4)), "step": 7, "captions": [["a"]] * 4}
    batch["mask_context_valid"] = torch.ones_like(batch["mask_context"], dtype=torch.bool)
    parts = split_batch(batch, 2)
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            assert [p[key].shape[0] for p in parts] == [2, 2], key
            assert torch.equal(torch.cat([p[key] for p in parts]), value), key
        else:
            assert all(p[key] is value for p in parts), key
    with pytest.raises(ValueError, match=r"train\.accum_steps=3.*multiple of train\.accum_steps"):
        split_batch(batch, 3)
    with pytest.raises(ValueError, match=r"batch\['odd'\] has 3 rows"):
        split_batch({**batch, "odd": torch.zeros(3)}, 2)


@pytest.mark.parametrize("where", ["loss", "gradient"])
@pytest.mark.parametrize("accum_steps", [1, 2])
def test_a_non_finite_step_changes_no_weight_and_no_optimizer_state(where: str, accum_steps: int) -> None:
    cfg, model, batch = _setup("tcjepa")
    opt = _optimizer(cfg, model)
    assert train_step(model, model, opt, batch, 0).finite  # so AdamW has moments that a bad step could move

    def poisoned(part: dict, diagnostics: bool = False):
        out = model(part, diagnostics)
        out.loss = out.loss * float("nan") if where == "loss" else NanGradient.apply(out.loss)
        return out

    weights, moments = _state(model), copy.deepcopy(opt.state_dict())
    result = train_step(model, poisoned, opt, batch, 1, accum_steps=accum_steps)
    assert not result.finite
    for name, value in _state(model).items():  # context and EMA target encoders, predictor
        assert torch.equal(value, weights[name]), name
    state = opt.state_dict()["state"]
    for i, entry in moments["state"].items():
        for key, value in entry.items():
            assert torch.equal(state[i][key], value), (i, key)


def test_accum_steps_is_validated_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"'train\.accum_steps' must be >= 1"):
        load_config("tiny", ["train.accum_steps=0"])
    with pytest.raises(ConfigError, match=r"'train\.batch_size'=16 is not divisible by 'train\.accum_steps'=3"):
        load_config("tiny", ["train.accum_steps=3"])
    assert load_config("tiny", ["train.accum_steps=4"]).train.accum_steps == 4


def test_timers_record_every_phase_and_are_a_no_op_when_off() -> None:
    off = PhaseTimers()
    assert off.phase("forward") is off.phase("backward")  # one shared null context: nothing to pay
    cfg, model, batch = _setup("ijepa")
    train_step(model, model, _optimizer(cfg, model), batch, 0, timers=off)
    assert off.medians_ms() == {}
    on = PhaseTimers(enabled=True)
    for step in range(2):
        train_step(model, model, _optimizer(cfg, model), batch, step, accum_steps=2, timers=on)
    medians = on.medians_ms()
    assert list(medians) == ["forward", "backward", "clip", "optimizer", "ema"]
    assert all(v > 0 for v in medians.values())
