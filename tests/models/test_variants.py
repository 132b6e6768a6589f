"""The conditioning variants and caption fusions, each against a naive reference written from its definition.

The family contract (switch-off, padding, gradients, cond_layers) is in :mod:`.test_conditioning`, which runs
over the whole registry; here: what each variant computes, and the config rules that go with them.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from tcjepa.config import ConfigError
from tcjepa.methods import build_method
from tcjepa.models.conditioning import AdaLN, CaptionCrossAttention, TextCrossAttention, TextInputs
from tcjepa.models.predictor import Predictor
from tcjepa.train.loop import pretrain

pytestmark = pytest.mark.usefixtures("single_thread")
LENGTHS = [[5, 2, 0], [0, 0, 0], [1, 4, 3], [0, 3, 0]]  # absent captions first, last, alone and everywhere


def _text(lengths: list[list[int]], words: int = 5, dt: int = 12, seed: int = 0) -> TextInputs:
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor(lengths)
    return TextInputs(
        torch.randn(len(lengths), lens.shape[1], words, dt, generator=g),
        torch.arange(words) < lens[..., None],
        lens > 0,
    )


def _per_caption(cond: TextCrossAttention, x: torch.Tensor, text: TextInputs, b: int, n: int) -> torch.Tensor:
    """Image b's update from caption n alone, before the output projection: (T, d)."""
    real = text.text_mask[b, n]
    q = cond.q(cond.norm(x[b]))  # (T, d)
    k, v = cond.k(text.text[b, n, real]), cond.v(text.text[b, n, real])
    h, dh = cond.num_heads, q.shape[-1] // cond.num_heads
    heads = [
        torch.softmax(q[:, i * dh : (i + 1) * dh] @ k[:, i * dh : (i + 1) * dh].T / dh**0.5, -1)
        @ v[:, i * dh : (i + 1) * dh]
        for i in range(h)
    ]
    return torch.cat(heads, dim=-1)


def _reference_fused(cond: TextCrossAttention, x: torch.Tensor, text: TextInputs, mode: str) -> torch.Tensor:
    """Loop over images and their present captions only, then fuse as the mode says, then W_O."""
    out = torch.zeros_like(x)
    for b in range(x.shape[0]):
        present = [n for n in range(text.text.shape[1]) if text.caption_mask[b, n]]
        if not present:
            continue  # no captions: no update at all
        ups = torch.stack([_per_caption(cond, x, text, b, n) for n in present])  # (P, T, d)
        if mode == "max":
            fused = ups.max(dim=0).values
        elif mode == "mean":
            fused = ups.sum(0) / len(present)
        else:
            query = cond.fuse.query.reshape(-1)
            w = torch.softmax(ups @ query / query.numel() ** 0.5, dim=0)  # (P, T) over the present captions
            fused = (w[..., None] * ups).sum(0)
        out[b] = cond.proj(fused)
    return out


@pytest.mark.parametrize("mode", ["max", "mean", "attention"])
@pytest.mark.parametrize("heads", [1, 4])
def test_caption_fusion_matches_a_naive_reference(mode: str, heads: int) -> None:
    torch.manual_seed(0)
    cond = TextCrossAttention(dim=16, text_dim=12, num_heads=heads, fusion=mode)
    torch.nn.init.normal_(cond.proj.bias)
    if mode == "attention":
        torch.nn.init.normal_(cond.fuse.query)  # away from its zero start, where it is the mean
    x = torch.randn(4, 7, 16)
    text = _text(LENGTHS)
    delta, _ = cond(x, text)
    torch.testing.assert_close(delta, _reference_fused(cond, x, text, mode), rtol=1e-5, atol=1e-6)
    assert torch.equal(delta[1], torch.zeros(7, 16))


@pytest.mark.parametrize("mode", ["max", "mean", "attention"])
def test_an_absent_caption_never_wins_whatever_its_states(mode: str) -> None:
    torch.manual_seed(0)
    cond = TextCrossAttention(dim=16, text_dim=12, num_heads=2, fusion=mode)
    if mode == "attention":
        torch.nn.init.normal_(cond.fuse.query)
    x, text = torch.randn(4, 7, 16), _text(LENGTHS)
    loud = TextInputs(text.text.clone(), text.text_mask.clone(), text.caption_mask)
    loud.text[~text.caption_mask] = 1e4  # huge states in the absent captions, their words marked real
    loud.text_mask[~text.caption_mask] = True
    torch.testing.assert_close(cond(x, loud)[0], cond(x, text)[0], rtol=0, atol=0)


def test_attention_fusion_starts_as_the_mean() -> None:
    torch.manual_seed(0)
    attention = TextCrossAttention(dim=16, text_dim=12, num_heads=2, fusion="attention")
    mean = TextCrossAttention(dim=16, text_dim=12, num_heads=2, fusion="mean")
    mean.load_state_dict(attention.state_dict(), strict=False)
    x, text = torch.randn(4, 7, 16), _text(LENGTHS)
    torch.testing.assert_close(attention(x, text)[0], mean(x, text)[0])
    # max and mean keep the checkpoint keys of before; only attention adds its query.
    assert set(attention.state_dict()) - set(mean.state_dict()) == {"fuse.query"}


def test_caption_conditioner_matches_a_naive_reference() -> None:
    """Per image: q from each token, one key and value per present caption (the mean of its real words),
    one softmax over those captions per head, W_O; no captions: no update."""
    torch.manual_seed(0)
    cond = CaptionCrossAttention(dim=16, text_dim=12, num_heads=4)
    torch.nn.init.normal_(cond.proj.bias)
    x, text = torch.randn(4, 7, 16), _text(LENGTHS)
    delta, links = cond.residual(x, text)
    assert links is None
    for b in range(4):
        present = [n for n in range(3) if text.caption_mask[b, n]]
        if not present:
            assert torch.equal(delta[b], torch.zeros(7, 16))
            continue
        c = torch.stack([text.text[b, n, text.text_mask[b, n]].mean(0) for n in present])  # (P, Dt)
        q, k, v = cond.q(cond.norm(x[b])), cond.k(c), cond.v(c)
        heads = [
            torch.softmax(q[:, i * 4 : i * 4 + 4] @ k[:, i * 4 : i * 4 + 4].T / 2.0, -1) @ v[:, i * 4 : i * 4 + 4]
            for i in range(4)
        ]
        torch.testing.assert_close(delta[b], cond.proj(torch.cat(heads, -1)), rtol=1e-5, atol=1e-6)
    # The patch does choose: tokens of one image get different updates.
    assert not torch.allclose(delta[0, 0], delta[0, 1])


def test_adaln_modulates_both_norms_from_the_pooled_captions() -> None:
    torch.manual_seed(0)
    cond = AdaLN(dim=16, text_dim=12)
    cond.after_init(1)
    h, text = torch.randn(4, 7, 16), _text(LENGTHS)
    assert torch.equal(cond.modulate(h, "norm1", text), h)  # zero-initialised: the identity
    for mod in (cond.mod1, cond.mod2):
        torch.nn.init.normal_(mod.weight)
        torch.nn.init.normal_(mod.bias)
    for site, mod in (("norm1", cond.mod1), ("norm2", cond.mod2)):
        got = cond.modulate(h, site, text)
        for b in range(4):
            present = [n for n in range(3) if text.caption_mask[b, n]]
            if not present:
                assert torch.equal(got[b], h[b])
                continue
            c = torch.stack([text.text[b, n, text.text_mask[b, n]].mean(0) for n in present]).mean(0)
            scale, shift = mod(F.silu(c)).chunk(2)
            torch.testing.assert_close(got[b], h[b] * (1 + scale) + shift, rtol=1e-5, atol=1e-6)


def _predictor(conditioning: str) -> Predictor:
    torch.manual_seed(0)
    return Predictor(grid=4, enc_dim=24, dim=16, depth=2, num_heads=2, text_dim=12, conditioning=conditioning)


def test_sequence_words_are_keys_of_self_attention_and_not_outputs() -> None:
    """The same predictor on the sequence written out by hand: the image's real words, then context and targets."""
    pred = _predictor("sequence")
    text = _text([[5, 2, 0], [1, 4, 3]])
    g = torch.Generator().manual_seed(1)
    z, ctx = torch.randn(2, 5, 24, generator=g), torch.stack([torch.randperm(16, generator=g)[:5] for _ in range(2)])
    tgt = torch.stack([torch.randperm(16, generator=g)[:4].view(2, 2) for _ in range(2)])
    with torch.no_grad():
        out, links = pred(z, ctx, tgt, text)
        assert links == [] and out.shape == (2, 2, 2, 24)
        for b in range(2):
            words = pred.cond_input.proj(text.text[b][text.text_mask[b]])  # only the real words
            for m in range(2):
                x = torch.cat(
                    [pred.embed(z[b]) + pred.pos_embed[ctx[b]], pred.mask_token[0, 0] + pred.pos_embed[tgt[b, m]]]
                )
                x = torch.cat([words, x])[None]
                for block in pred.blocks:
                    x, _ = block(x, None, 1)
                want = pred.out(pred.norm(x[0, -2:]))
                torch.testing.assert_close(out[b, m], want, rtol=1e-4, atol=1e-5)


def test_input_conditioner_holds_no_block_parameters() -> None:
    pred = _predictor("input")
    assert all(block.cond is None for block in pred.blocks)
    assert set(pred.cond_params()) == {"cond_input.proj.weight", "cond_input.proj.bias"}


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["model.predictor.conditioning=adaln"], "no patch-word links.*loss.sparse_form=none"),
        (["model.predictor.conditioning=caption", "loss.centred=false"], "no patch-word links"),
        (
            ["model.predictor.conditioning=caption", "loss.sparse_form=none", "model.predictor.caption_fusion=mean"],
            "caption_fusion=mean applies to",
        ),
        (
            ["model.predictor.conditioning=input", "loss.sparse_form=none", "model.predictor.cond_layers=last"],
            "conditions no block",
        ),
        (["model.predictor.caption_fusion=avg"], "caption_fusion.*max, mean, attention"),
    ],
)
def test_config_refuses_keys_the_conditioner_cannot_honour(tiny_cfg, overrides: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_method(tiny_cfg(*overrides), text_dim=8)


def test_regularisers_off_by_weight_are_allowed_without_links(tiny_cfg) -> None:
    cfg = tiny_cfg("model.predictor.conditioning=adaln", "loss.sparse_weight=0", "loss.consistency_weight=0")
    assert not build_method(cfg, text_dim=8).grounded


VARIANTS = [
    ("words", "all", "max"),
    ("words", "last", "mean"),
    ("words", "all", "attention"),
    ("caption", "all", "max"),
    ("adaln", "last", "max"),
    ("input", "all", "max"),
    ("sequence", "all", "max"),
]


@pytest.mark.parametrize(("conditioning", "layers", "fusion"), VARIANTS, ids=["-".join(v) for v in VARIANTS])
def test_every_variant_trains_the_tiny_preset(tiny_cfg, tmp_path, conditioning: str, layers: str, fusion: str) -> None:
    extra = [] if conditioning == "words" else ["loss.sparse_form=none"]
    cfg = tiny_cfg(
        f"model.predictor.conditioning={conditioning}",
        f"model.predictor.cond_layers={layers}",
        f"model.predictor.caption_fusion={fusion}",
        "train.steps=3",
        "train.log_every=1",
        f"run.dir={tmp_path / 'run'}",
        *extra,
    )
    run = pretrain(cfg, progress=False)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) >= 3 and all(torch.isfinite(torch.tensor(losses)))
    assert any(k.startswith("pos_frac_l") for r in rows for k in r) == (conditioning == "words")
