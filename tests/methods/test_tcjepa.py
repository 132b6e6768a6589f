"""TC-JEPA's text path: it reduces to I-JEPA when switched off, learns, and ignores padding and absent captions."""

from __future__ import annotations

import pytest
import torch

from tcjepa.methods import build_method
from tcjepa.models.conditioning import TextInputs

pytestmark = pytest.mark.usefixtures("single_thread")

TEXT_DIM = 32  # configs/tiny.yaml: text.hashed_dim
FORMS = ("paper", "mean", "margin", "topk", "entropy", "none")


@pytest.fixture
def methods(tiny_cfg):
    """An I-JEPA and a TC-JEPA whose shared weights are identical (the TC-JEPA built from another seed)."""
    torch.manual_seed(0)
    ij = build_method(tiny_cfg("method=ijepa"))
    torch.manual_seed(1)
    tc = build_method(tiny_cfg("method=tcjepa"), text_dim=TEXT_DIM)
    missing, unexpected = tc.load_state_dict(ij.state_dict(), strict=False)
    assert not unexpected
    assert missing and all(".cond." in k for k in missing)
    return ij, tc


def _cond_layers(method):
    return [block.cond for block in method.predictor.blocks]


def test_zero_output_projection_gives_ijepa_predictions(methods, make_batch, add_text) -> None:
    ij, tc = methods
    batch = add_text(make_batch(batch_size=3))
    text = TextInputs.from_batch(batch)
    with torch.no_grad():
        conditioned, _ = tc.predict(batch, text)
        for cond in _cond_layers(tc):
            cond.proj.weight.zero_()
            cond.proj.bias.zero_()
        zeroed, outputs = tc.predict(batch, text)
        plain, none = ij.predict(batch, None)
    assert len(outputs) == len(tc.predictor.blocks) and none == []  # the text path did run
    assert not torch.allclose(conditioned, plain, atol=1e-4)  # with its projection the text does change things
    assert torch.equal(zeroed, plain)  # adding an exact zero: no rounding to excuse
    # The whole objective agrees too, apart from the regularisers that only TC-JEPA has.
    torch.testing.assert_close(tc(batch).terms["loss_pred"], ij(batch).terms["loss_pred"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("regularised", [True, False], ids=["full-loss", "prediction-loss-only"])
def test_gradients_reach_every_conditioner_projection(tiny_cfg, make_batch, add_text, regularised: bool) -> None:
    overrides = [] if regularised else ["loss.sparse_weight=0", "loss.consistency_weight=0"]
    torch.manual_seed(0)
    tc = build_method(tiny_cfg("method=tcjepa", *overrides), text_dim=TEXT_DIM)
    batch = add_text(make_batch())
    out = tc(batch)
    loss, metrics = out.loss, out.terms
    if not regularised:
        assert float(loss.detach()) == float(metrics["loss_pred"])
    loss.backward()
    for i, cond in enumerate(_cond_layers(tc)):
        assert cond.proj.weight.abs().sum() > 0  # the projections are not zero here
        for name in ("q", "k", "v", "proj"):
            grad = getattr(cond, name).weight.grad
            assert grad is not None and grad.abs().sum() > 0, f"layer {i} cond.{name} gets no gradient"
            assert torch.isfinite(grad).all()


def _pad(batch: dict, extra_words: int, absent_at: list[int], seed: int = 7) -> dict:
    """The same captions with ``extra_words`` padded word slots and absent captions inserted at ``absent_at``,
    all filled with large random garbage (absent captions even claim their garbage words are real)."""
    g = torch.Generator().manual_seed(seed)
    text, text_mask, caption_mask = batch["text"], batch["text_mask"], batch["caption_mask"]
    b, n, s, dt = text.shape
    text = torch.cat([text, 10 * torch.randn(b, n, extra_words, dt, generator=g)], dim=2)
    text_mask = torch.cat([text_mask, torch.zeros(b, n, extra_words, dtype=torch.bool)], dim=2)
    for pos in absent_at:
        garbage = 10 * torch.randn(b, 1, s + extra_words, dt, generator=g)
        text = torch.cat([text[:, :pos], garbage, text[:, pos:]], dim=1)
        text_mask = torch.cat(
            [text_mask[:, :pos], torch.ones(b, 1, s + extra_words, dtype=torch.bool), text_mask[:, pos:]], 1
        )
        caption_mask = torch.cat([caption_mask[:, :pos], torch.zeros(b, 1, dtype=torch.bool), caption_mask[:, pos:]], 1)
    return {**batch, "text": text, "text_mask": text_mask, "caption_mask": caption_mask}


@pytest.mark.parametrize(
    ("extra_words", "absent_at"), [(4, []), (0, [1, 4]), (4, [0, 4])], ids=["words", "captions", "both"]
)
def test_padded_words_and_absent_captions_change_nothing(
    tiny_cfg, make_batch, add_text, extra_words: int, absent_at: list[int]
) -> None:
    torch.manual_seed(0)
    tc = build_method(tiny_cfg("method=tcjepa"), text_dim=TEXT_DIM)
    batch = add_text(make_batch(batch_size=3), captions=3, words=5)
    padded = _pad(batch, extra_words=extra_words, absent_at=absent_at)
    assert padded["text"].shape[1:3] == (3 + len(absent_at), 5 + extra_words)
    with torch.no_grad():
        text, text_p = TextInputs.from_batch(batch), TextInputs.from_batch(padded)
        pred, outputs = tc.predict(batch, text)
        pred_p, outputs_p = tc.predict(padded, text_p)
        torch.testing.assert_close(pred_p, pred, rtol=0, atol=1e-6)
        for form in FORMS:
            tc.cfg.loss.sparse_form = form
            _, sparse, consistency = tc.regularise(outputs, text, step=0)
            _, sparse_p, consistency_p = tc.regularise(outputs_p, text_p, step=0)
            if form != "none":
                assert sparse > 0 and consistency > 0, form
            torch.testing.assert_close(sparse_p, sparse, rtol=1e-6, atol=1e-7, msg=form)
            torch.testing.assert_close(consistency_p, consistency, rtol=1e-6, atol=1e-7, msg=form)


def test_image_without_captions_gets_the_text_free_prediction(tiny_cfg, make_batch, add_text) -> None:
    torch.manual_seed(0)
    tc = build_method(tiny_cfg("method=tcjepa"), text_dim=TEXT_DIM)
    batch = add_text(make_batch(batch_size=3), captions=3, words=5, lengths=[[5, 3, 4], [0, 0, 0], [2, 0, 5]])
    batch["text_mask"][1] = True  # its (garbage) words claim to be real: only caption_mask says "no caption"
    text = TextInputs.from_batch(batch)
    with torch.no_grad():
        pred, outputs = tc.predict(batch, text)
        text_free, _ = tc.predict(batch, None)
    assert torch.equal(pred[1], text_free[1])  # no update at all, not a small one
    for i in (0, 2):
        assert (pred[i] - text_free[i]).abs().max() > 1e-4, f"image {i} has captions but was not conditioned"
    # It contributes nothing to the regularisers either: they equal those of the batch without it.
    keep = [0, 2]
    sub = {k: batch[k][keep] for k in ("images", "mask_context", "mask_targets", "text", "text_mask", "caption_mask")}
    with torch.no_grad():
        _, outputs_sub = tc.predict(sub, TextInputs.from_batch(sub))
        _, sparse, consistency = tc.regularise(outputs, text, step=0)
        _, sparse_sub, consistency_sub = tc.regularise(outputs_sub, TextInputs.from_batch(sub), step=0)
    torch.testing.assert_close(sparse, sparse_sub, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(consistency, consistency_sub, rtol=1e-6, atol=1e-7)
    # The -inf of the max-pool over no captions must not leak into the gradients.
    tc(batch).loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in tc.parameters() if p.grad is not None)


def test_batch_without_any_caption_is_ijepa(methods, make_batch, add_text) -> None:
    ij, tc = methods
    batch = add_text(make_batch(), lengths=[[0, 0, 0], [0, 0, 0]])
    assert TextInputs.from_batch(batch) is None
    out_tc = tc(batch)
    loss_tc, m_tc = out_tc.loss, out_tc.terms
    torch.testing.assert_close(loss_tc, ij(batch).loss, rtol=0, atol=1e-6)
    assert float(m_tc["loss_sparse"]) == 0.0 and float(m_tc["loss_consistency"]) == 0.0


def test_sparse_warmup_ramps_the_regulariser_linearly(tiny_cfg, make_batch, add_text) -> None:
    torch.manual_seed(0)
    tc = build_method(tiny_cfg("method=tcjepa", "loss.sparse_warmup_steps=10"), text_dim=TEXT_DIM)
    batch = add_text(make_batch())
    text = TextInputs.from_batch(batch)
    with torch.no_grad():
        _, outputs = tc.predict(batch, text)
    full, sparse, consistency = tc.regularise(outputs, text, step=10)
    torch.testing.assert_close(full, 0.1 * sparse + 0.5 * consistency)
    assert float(full) > 0
    for step, share in [(0, 0.0), (3, 0.3), (5, 0.5), (10, 1.0), (11, 1.0), (1000, 1.0)]:
        total, _, _ = tc.regularise(outputs, text, step=step)
        assert float(total) == pytest.approx(share * float(full), rel=1e-6, abs=0.0), step
    # The step reaches the regulariser through the batch, as the training loop sends it.
    for step, share in [(0, 0.0), (5, 0.5), (20, 1.0)]:
        out = tc({**batch, "step": step})
        loss, metrics = out.loss, out.terms
        assert float(loss.detach() - metrics["loss_pred"]) == pytest.approx(share * float(full), rel=1e-5, abs=1e-7), (
            step
        )
