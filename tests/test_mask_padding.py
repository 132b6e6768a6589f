"""mask.truncate=pad: whole contexts padded to the batch's largest, with the padding kept out of attention.

The reference for every padded result is the same image run alone with only its real context indices:
padding must change nothing an image's own computation produces.
"""

from __future__ import annotations

import json

import pytest
import torch

import tcjepa.data.masks as masks_module
from tcjepa.config import ConfigError
from tcjepa.data.masks import MaskBatch, MaskConfig, MultiBlockMaskSampler, pad_to_largest
from tcjepa.data.stream import heldout_batch
from tcjepa.losses.sparsity import FORMS, link_stats, sparsity_losses
from tcjepa.methods import build_method
from tcjepa.models.conditioning import CondOutput, TextInputs
from tcjepa.models.vit import VisionTransformer, vit_spec
from tcjepa.train.loop import pretrain

from .conftest import tiny_batch, with_text

pytestmark = pytest.mark.usefixtures("single_thread")

TEXT_DIM = 32  # configs/tiny.yaml: text.hashed_dim
COUNTS = (20, 12, 7)  # real context patches per image of the padded test batch
TOL = 1e-5


def _padded_batch(text: bool = False) -> dict:
    """Three images with 20, 12 and 7 context patches, padded to 20 as the sampler pads."""
    batch = tiny_batch(batch_size=len(COUNTS), context=max(COUNTS), target=4, num_targets=2)
    placed = torch.zeros(len(COUNTS), 64, dtype=torch.bool)
    for b, n in enumerate(COUNTS):
        placed[b, batch["mask_context"][b, :n]] = True
    batch["mask_context"], batch["mask_context_valid"] = pad_to_largest(placed)
    if text:  # image 0 lacks its second caption: absent captions must stay out of the means too
        batch = with_text(batch, captions=3, words=5, text_dim=TEXT_DIM, lengths=[[5, 0, 3], [4, 5, 2], [3, 3, 3]])
    return batch


def _alone(batch: dict, b: int) -> dict:
    """Image ``b`` of a padded batch on its own, with only its real context indices and no padding mask."""
    n = int(batch["mask_context_valid"][b].sum())
    out = {k: v[b : b + 1] for k, v in batch.items() if isinstance(v, torch.Tensor)}
    out["mask_context"] = out["mask_context"][:, :n]
    del out["mask_context_valid"]
    return out


# --------------------------------------------------------------------------------------------- sampler


def _capture(monkeypatch: pytest.MonkeyPatch, name: str) -> list[torch.Tensor]:
    """Record the placed (B, N) context masks the sampler hands to ``masks_module.<name>``."""
    seen: list[torch.Tensor] = []
    original = getattr(masks_module, name)

    def spy(masks: torch.Tensor, *args):
        seen.append(masks.clone())
        return original(masks, *args)

    monkeypatch.setattr(masks_module, name, spy)
    return seen


@pytest.mark.parametrize("draw", ["reference", "independent"])
def test_min_is_todays_sampler_bit_for_bit(monkeypatch: pytest.MonkeyPatch, draw: str) -> None:
    explicit = MaskConfig((0.85, 1.0), (0.15, 0.2), (0.75, 1.5), 4, 10, draw)  # no truncate field given
    assert explicit.truncate == "min"
    old = MultiBlockMaskSampler(8, explicit)
    new = MultiBlockMaskSampler(8, MaskConfig(draw=draw, truncate="min"))
    placed = _capture(monkeypatch, "truncate_to_smallest")
    for seed in range(3):
        g_old, g_new = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        a, b = old(64, g_old), new(64, g_new)
        assert torch.equal(a.context, b.context) and torch.equal(a.targets, b.targets) and a.stats == b.stats
        assert b.context_valid is None
        assert torch.equal(g_old.get_state(), g_new.get_state())  # same draws consumed: later streams unchanged
        assert b.context.shape[1] == int(placed[-1].sum(1).min()) == b.stats["mask_context_kept"]
        assert b.stats["mask_context_kept"] < b.stats["mask_context_placed"]  # what pad is for


def test_pad_keeps_every_placed_context_patch(monkeypatch: pytest.MonkeyPatch) -> None:
    placed = _capture(monkeypatch, "truncate_to_smallest")
    cut = MultiBlockMaskSampler(8, MaskConfig(truncate="min"))
    pad = MultiBlockMaskSampler(8, MaskConfig(truncate="pad"))
    for seed in range(3):
        cut_batch = cut(64, torch.Generator().manual_seed(seed))
        batch = pad(64, torch.Generator().manual_seed(seed))
        mask = placed[-1]  # min's placement from the same generator: placement draws do not depend on the mode
        valid = batch.context_valid
        assert valid is not None and valid.shape == batch.context.shape and valid.dtype == torch.bool
        assert torch.equal(batch.targets, cut_batch.targets)
        assert batch.context.shape[1] == int(mask.sum(1).max())
        assert torch.equal(valid.sum(1), mask.sum(1))
        for row, ok, want in zip(batch.context, valid, mask):
            real = row[ok]
            assert torch.equal(real, want.nonzero().flatten())  # all placed patches, sorted
            assert real.unique().numel() == real.numel() == int(ok.sum())  # the union count: no repeats
            assert bool(ok[: real.numel()].all())  # real slots first, padding after
            assert bool((row[~ok] == row[0]).all())  # padding repeats the first real index
        assert batch.stats["mask_context_kept"] == pytest.approx(float(valid.sum(1).float().mean()))
        assert batch.stats["mask_context_kept"] == pytest.approx(batch.stats["mask_context_placed"])
        assert batch.stats["mask_context_kept"] > cut_batch.stats["mask_context_kept"]
        for ctx, ok, tgt in zip(batch.context, valid, batch.targets):
            assert not set(ctx[ok].tolist()) & set(tgt.flatten().tolist())  # targets still hidden
    moved = batch.to("meta")
    assert moved.context_valid is not None and moved.context_valid.device.type == "meta"
    assert moved.stats == batch.stats


def test_truncate_is_validated_and_reaches_the_batch(tiny_cfg) -> None:
    with pytest.raises(ValueError, match="mask.truncate"):
        MultiBlockMaskSampler(8, MaskConfig(truncate="max"))
    with pytest.raises(ConfigError, match="mask.truncate"):
        tiny_cfg("mask.truncate=max")
    assert "mask_context_valid" not in heldout_batch(tiny_cfg(), 4, None)
    batch = heldout_batch(tiny_cfg("mask.truncate=pad"), 4, None)
    assert batch["mask_context_valid"].shape == batch["mask_context"].shape


def test_pad_to_largest_rejects_an_empty_mask() -> None:
    with pytest.raises(ValueError, match="at least one patch"):
        pad_to_largest(torch.tensor([[True, False], [False, False]]))


# ---------------------------------------------------------------------------------------------- models


def test_encoder_ignores_padding() -> None:
    torch.manual_seed(0)
    encoder = VisionTransformer(vit_spec("custom", 32, 4, embed_dim=64, depth=2, num_heads=2))
    batch = _padded_batch()
    z = encoder(batch["images"], keep=batch["mask_context"], keep_valid=batch["mask_context_valid"])
    unmasked = encoder(batch["images"], keep=batch["mask_context"])
    for b, n in enumerate(COUNTS):
        alone = _alone(batch, b)
        ref = encoder(alone["images"], keep=alone["mask_context"])[0]
        torch.testing.assert_close(z[b, :n], ref, atol=TOL, rtol=0)
        if n < max(COUNTS):  # control: attending to the padding would change the real features
            assert (unmasked[b, :n] - ref).abs().max() > 10 * TOL
    with pytest.raises(ValueError, match="keep_valid"):
        encoder(batch["images"], keep_valid=batch["mask_context_valid"])


@pytest.mark.parametrize("text", [False, True], ids=["no_text", "tcjepa_text"])
def test_predictions_ignore_padding(tiny_cfg, text: bool) -> None:
    torch.manual_seed(0)
    method = build_method(tiny_cfg("method=tcjepa"), text_dim=TEXT_DIM).eval()
    batch = _padded_batch(text)
    inputs = TextInputs.from_batch
    pred, outputs = method.predict(batch, inputs(batch))
    assert len(outputs) == (len(method.predictor.blocks) if text else 0)
    unpadded = {k: v for k, v in batch.items() if k != "mask_context_valid"}
    unmasked, _ = method.predict(unpadded, inputs(unpadded))
    for b, n in enumerate(COUNTS):
        alone = _alone(batch, b)
        ref, _ = method.predict(alone, inputs(alone))
        torch.testing.assert_close(pred[b], ref[0], atol=TOL, rtol=0)
        if n < max(COUNTS):  # control: without the masks the padding leaks into the predictions
            assert (unmasked[b] - ref[0]).abs().max() > 10 * TOL


# ------------------------------------------------------------------------------------------ regularisers


def _slice(outputs: list[CondOutput], text: TextInputs, b: int) -> tuple[list[CondOutput], TextInputs]:
    one = [CondOutput(o.cos[b : b + 1], o.attn[b : b + 1], o.query_mask[b : b + 1]) for o in outputs]
    return one, TextInputs(text.text[b : b + 1], text.text_mask[b : b + 1], text.caption_mask[b : b + 1])


@pytest.mark.parametrize("centred", [False, True])
def test_regularisers_and_link_stats_ignore_padded_queries(tiny_cfg, centred: bool) -> None:
    torch.manual_seed(0)
    method = build_method(tiny_cfg("method=tcjepa", f"loss.centred={str(centred).lower()}"), text_dim=TEXT_DIM)
    with torch.no_grad():  # peaked attention: at init it is near uniform, and so blind to extra queries
        for block in method.predictor.blocks:
            block.cond.q.weight.mul_(30)
    batch = _padded_batch(text=True)
    text = TextInputs.from_batch(batch)
    with torch.no_grad():
        _, outputs = method.predict(batch, text)
        alone = [_alone(batch, b) for b in range(len(COUNTS))]
        single = [method.predict(a, TextInputs.from_batch(a))[1] for a in alone]
    assert all(o.query_mask is not None and o.query_mask.shape == o.cos.shape[:2] for o in outputs)
    captions = text.caption_mask.sum(1).float()  # the losses are means over the (image, caption) pairs present
    leaked = False
    for form in FORMS:
        got = sparsity_losses(outputs, text, form)
        parts = [sparsity_losses(s, TextInputs.from_batch(a), form) for s, a in zip(single, alone)]
        for i in range(2):
            want = sum(c * p[i] for c, p in zip(captions, parts)) / captions.sum()
            torch.testing.assert_close(got[i], want, atol=TOL, rtol=0)
        blind = [CondOutput(o.cos, o.attn) for o in outputs]  # control: the same maps without the query mask
        leaked |= any(float((x - y).abs()) > 10 * TOL for x, y in zip(sparsity_losses(blind, text, form), got))
    assert leaked
    for b in range(len(COUNTS)):
        got = link_stats(*_slice(outputs, text, b))
        want = link_stats(single[b], TextInputs.from_batch(alone[b]))
        assert got.keys() == want.keys()
        for k in got:
            assert got[k] == pytest.approx(want[k], abs=TOL), k


def test_unpadded_regularisers_are_bit_identical(tiny_cfg) -> None:
    """An all-True query mask takes the weighted path; no mask at all must be the old plain mean."""
    torch.manual_seed(0)
    method = build_method(tiny_cfg("method=tcjepa"), text_dim=TEXT_DIM)
    batch = with_text(tiny_batch(batch_size=2), text_dim=TEXT_DIM)
    text = TextInputs.from_batch(batch)
    with torch.no_grad():
        _, outputs = method.predict(batch, text)
    assert all(o.query_mask is None for o in outputs)
    for form in FORMS:
        sparse, consistency = sparsity_losses(outputs, text, form)
        valid = text.valid.float()[None, :, None]
        maps = torch.stack([o.attn.mean(1) if form == "entropy" else torch.relu(o.cos) for o in outputs]) * valid
        if form == "paper":  # the literal Eq. 3, mean over layers and all tokens
            want = (maps.sum(-1).mean(dim=(0, 2)) * text.caption_mask).sum() / text.caption_mask.sum()
            assert torch.equal(sparse, want)
        ones = [CondOutput(o.cos, o.attn, torch.ones(o.cos.shape[:2], dtype=torch.bool)) for o in outputs]
        s1, c1 = sparsity_losses(ones, text, form)
        torch.testing.assert_close((s1, c1), (sparse, consistency), atol=1e-6, rtol=0)


# -------------------------------------------------------------------------------------------- training


def _kept(run_dir) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["mask_context_kept"] for line in lines]


def test_training_step_with_padding_keeps_more_context(tiny_cfg, tmp_path) -> None:
    kept = {}
    for mode in ("min", "pad"):
        overrides = ("train.steps=3", "train.monitor_every=0", f"mask.truncate={mode}", f"run.dir={tmp_path / mode}")
        kept[mode] = _kept(pretrain(tiny_cfg(*overrides), progress=False))
    assert len(kept["pad"]) == len(kept["min"]) >= 1
    assert all(p > c for p, c in zip(kept["pad"], kept["min"])), kept


def test_mask_batch_without_padding_has_none() -> None:
    batch = MaskBatch(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 1, 1, dtype=torch.long))
    assert batch.context_valid is None and batch.to("cpu").context_valid is None
