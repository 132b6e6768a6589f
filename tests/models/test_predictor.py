"""The predictor and its text conditioner against straightforward reference computations."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from tcjepa.models.conditioning import TextCrossAttention, TextInputs
from tcjepa.models.predictor import Predictor, gather_targets
from tcjepa.models.vit import sincos_pos_embed

pytestmark = pytest.mark.usefixtures("single_thread")


def _text(b: int, n: int, s: int, dt: int, lengths: list[list[int]], seed: int = 0) -> TextInputs:
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor(lengths)
    return TextInputs(
        text=torch.randn(b, n, s, dt, generator=g),
        text_mask=torch.arange(s) < lens[..., None],
        caption_mask=lens > 0,
    )


def _reference_cross_attention(cond: TextCrossAttention, x: torch.Tensor, text: TextInputs) -> torch.Tensor:
    """Eq. 2 and 4 read literally: per caption, ordinary multi-head attention (1/sqrt(d_head), padding
    masked, heads concatenated); the max over the captions present; then the output projection (zero
    update when an image has no captions)."""
    b, t, d = x.shape
    h = cond.num_heads
    q = cond.q(cond.norm(x)).view(b, t, h, d // h).transpose(1, 2)
    updates = []
    for n in range(text.text.shape[1]):
        k = cond.k(text.text[:, n]).view(b, -1, h, d // h).transpose(1, 2)
        v = cond.v(text.text[:, n]).view(b, -1, h, d // h).transpose(1, 2)
        mask = text.text_mask[:, n][:, None, None, :]
        mask = mask | ~mask.any(-1, keepdim=True)  # fully padded (absent) caption: any finite row, pooled out
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        updates.append(out.transpose(1, 2).reshape(b, t, d))
    stacked = torch.stack(updates, dim=1)  # (B, N, T, d)
    present = text.caption_mask[:, :, None, None]
    pooled = cond.proj(stacked.masked_fill(~present, float("-inf")).amax(dim=1))
    return torch.where(text.caption_mask.any(1)[:, None, None], pooled, torch.zeros_like(pooled))


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_cross_attention_matches_reference(heads: int) -> None:
    torch.manual_seed(0)
    cond = TextCrossAttention(dim=16, text_dim=12, num_heads=heads)
    torch.nn.init.normal_(cond.proj.bias)
    x = torch.randn(3, 7, 16)
    text = _text(3, 3, 5, 12, [[5, 2, 0], [0, 0, 0], [1, 4, 3]])
    delta, out = cond(x, text)
    torch.testing.assert_close(delta, _reference_cross_attention(cond, x, text), rtol=1e-5, atol=1e-6)
    assert torch.equal(delta[1], torch.zeros(7, 16))  # no captions: no update
    # The exposed maps: cosine over the full projected width, and the per-caption softmax over real words.
    q, k = cond.q(cond.norm(x)), cond.k(text.text)
    cos = F.cosine_similarity(q[:, :, None, None, :], k[:, None], dim=-1)  # (B, T, N, S)
    real = text.valid[:, None].expand_as(cos)
    torch.testing.assert_close(out.cos[real], cos[real], rtol=1e-5, atol=1e-6)
    assert torch.all(out.cos[~real] == 0)  # padding words and absent captions are not projected at all
    assert out.attn.shape == (3, heads, 7, 3, 5)
    sums = out.attn.sum(-1)  # every present caption's row is a distribution over its real words
    present = text.caption_mask[:, None, None, :].expand_as(sums)
    torch.testing.assert_close(sums[present], torch.ones(int(present.sum())))
    padded = (~text.text_mask & text.caption_mask[..., None])[:, None, None].expand_as(out.attn)
    assert torch.all(out.attn[padded] == 0)


def test_cross_attention_uses_max_over_captions_not_mean() -> None:
    torch.manual_seed(0)
    cond = TextCrossAttention(dim=8, text_dim=8, num_heads=2)
    with torch.no_grad():  # an identity output projection exposes the pooled per-caption updates
        cond.proj.weight.copy_(torch.eye(8))
        cond.proj.bias.zero_()
    x = torch.randn(1, 4, 8)
    one = _text(1, 1, 3, 8, [[3]], seed=1)
    two = _text(1, 1, 3, 8, [[3]], seed=2)
    both = TextInputs(
        torch.cat([one.text, two.text], 1), torch.cat([one.text_mask, two.text_mask], 1), torch.ones(1, 2, dtype=bool)
    )
    d1, _ = cond(x, one)
    d2, _ = cond(x, two)
    d12, _ = cond(x, both)
    torch.testing.assert_close(d12, torch.maximum(d1, d2))


def _predictor(text_dim: int | None = None) -> Predictor:
    torch.manual_seed(0)
    return Predictor(grid=4, enc_dim=24, dim=16, depth=3, num_heads=2, text_dim=text_dim, cond_heads=4)


def test_predictor_shapes_and_per_block_independence() -> None:
    pred = _predictor()
    z = torch.randn(2, 5, 24)
    ctx = torch.tensor([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
    tgt = torch.tensor([[[10, 11], [12, 13], [14, 15]], [[0, 1], [2, 3], [4, 15]]])
    out, outputs = pred(z, ctx, tgt)
    assert out.shape == (2, 3, 2, 24) and outputs == []
    # Target blocks are predicted independently: dropping one leaves the others unchanged.
    sub, _ = pred(z, ctx, tgt[:, [0, 2]])
    torch.testing.assert_close(sub, out[:, [0, 2]], rtol=0, atol=1e-6)
    # Mask tokens carry their position: the same block at other positions gives another prediction.
    moved, _ = pred(z, ctx, tgt.flip(-1))
    torch.testing.assert_close(moved, out.flip(-2), rtol=0, atol=1e-5)


def _strip_mask_positions(pred: Predictor, kc: int) -> Predictor:
    """The bug under test, injected: the first block sees bare mask tokens (no target position added)."""

    def hook(module, args):
        x, *rest = args
        bare = pred.mask_token.reshape(1, 1, -1).expand(x.shape[0], x.shape[1] - kc, -1)
        return (torch.cat([x[:, :kc], bare], dim=1), *rest)

    pred.blocks[0].register_forward_pre_hook(hook)
    return pred


def _assert_predictions_follow_target_positions(pred: Predictor) -> None:
    """With the context fixed, what is predicted depends on where the targets are, and only through that."""
    g = torch.Generator().manual_seed(3)
    z = torch.randn(2, 5, 24, generator=g)
    ctx = torch.tensor([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
    a = torch.tensor([[[10, 11, 12], [13, 14, 15]], [[0, 1, 2], [3, 4, 15]]])
    b = torch.tensor([[[5, 6, 7], [8, 9, 0]], [[10, 11, 12], [13, 14, 6]]])
    with torch.no_grad():
        pa, _ = pred(z, ctx, a)
        pb, _ = pred(z, ctx, b)
        # Other target positions, same context: every predicted token changes.
        assert bool(((pa - pb).abs().amax(-1) > 1e-3).all()), "predictions ignore the target positions"
        # Within one block, the tokens at different positions get different predictions.
        for p in (pa, pb):
            for i in range(p.shape[2]):
                for j in range(i + 1, p.shape[2]):
                    assert bool(((p[:, :, i] - p[:, :, j]).abs().amax(-1) > 1e-3).all()), (i, j)
        # Equivariance: asking for the same positions in another order permutes the predictions alike.
        for perm in ([2, 0, 1], [1, 2, 0], [0, 2, 1]):
            moved, _ = pred(z, ctx, a[..., perm])
            torch.testing.assert_close(moved, pa[:, :, perm], rtol=0, atol=1e-5)
        # Per-image permutations of the target indices (gathered from the unpermuted prediction).
        perms = torch.stack([torch.randperm(3, generator=g) for _ in range(4)]).view(2, 2, 3)
        moved, _ = pred(z, ctx, a.gather(-1, perms))
        expected = pa.gather(2, perms[..., None].expand(-1, -1, -1, pa.shape[-1]))
        torch.testing.assert_close(moved, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("text_dim", [None, 12])
def test_mask_tokens_carry_their_target_position(text_dim: int | None) -> None:
    pred = _predictor(text_dim=text_dim)
    _assert_predictions_follow_target_positions(pred)
    # What the first block receives: context features + their positions, then mask_token + target positions.
    seen: list[torch.Tensor] = []
    pred.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    z, ctx = torch.randn(2, 5, 24), torch.tensor([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
    tgt = torch.tensor([[[10, 11], [12, 13], [14, 15]], [[0, 1], [2, 3], [4, 15]]])
    with torch.no_grad():
        pred(z, ctx, tgt)
        pos = sincos_pos_embed(16, 4)
        want_masks = pred.mask_token.reshape(16) + pos[tgt]  # (B, M, Kt, d)
        want_ctx = pred.embed(z) + pos[ctx]
    x = seen[0].view(2, 3, 5 + 2, 16)
    torch.testing.assert_close(x[:, :, 5:], want_masks, rtol=0, atol=1e-6)
    torch.testing.assert_close(x[:, :, :5], want_ctx[:, None].expand(2, 3, 5, 16), rtol=0, atol=1e-6)


def test_position_check_catches_mask_tokens_without_positions() -> None:
    """The check above is not vacuous: a predictor whose mask tokens lack their positions fails it."""
    broken = _strip_mask_positions(_predictor(), kc=5)
    with pytest.raises(AssertionError):
        _assert_predictions_follow_target_positions(broken)


def test_conditioned_predictor_exposes_one_output_per_layer() -> None:
    pred = _predictor(text_dim=12)
    assert pred.conditioned and not _predictor().conditioned
    text = _text(2, 3, 4, 12, [[4, 2, 0], [1, 1, 1]])
    z, ctx = torch.randn(2, 5, 24), torch.arange(10).view(2, 5)
    tgt = torch.tensor([[[10, 11], [12, 13]], [[0, 15], [2, 3]]])
    out, outputs = pred(z, ctx, tgt, text)
    assert out.shape == (2, 2, 2, 24) and len(outputs) == 3
    t = 2 * (5 + 2)  # the M copies of (context + target) tokens share one query axis per image
    assert all(o.cos.shape == (2, t, 3, 4) and o.attn.shape == (2, 4, t, 3, 4) for o in outputs)


def test_predictor_residual_rescaling_includes_the_conditioner(monkeypatch: pytest.MonkeyPatch) -> None:
    from tcjepa.models import predictor as predictor_module
    from tcjepa.models.conditioning import words

    pred = _predictor(text_dim=12)
    monkeypatch.setattr(predictor_module, "rescale_residual_branches", lambda blocks: None)
    monkeypatch.setattr(words, "math", SimpleNamespace(sqrt=lambda v: 1.0))  # cond.proj's own scaling
    plain = _predictor(text_dim=12)
    for layer_id, (block, ref) in enumerate(zip(pred.blocks, plain.blocks), start=1):
        scale = math.sqrt(2.0 * layer_id)
        for name in ("attn.proj", "mlp.fc2", "cond.proj"):
            got, want = block.get_submodule(name).weight, ref.get_submodule(name).weight
            torch.testing.assert_close(got, want / scale, rtol=1e-6, atol=0, msg=name)
        assert torch.equal(block.cond.q.weight, ref.cond.q.weight)
    assert torch.equal(pred.pos_embed, sincos_pos_embed(16, 4))


def test_gather_targets() -> None:
    h = torch.arange(2 * 6 * 3, dtype=torch.float32).view(2, 6, 3)
    idx = torch.tensor([[[0, 5], [2, 2]], [[1, 0], [4, 3]]])
    out = gather_targets(h, idx)
    assert out.shape == (2, 2, 2, 3)
    for b in range(2):
        for m in range(2):
            for j in range(2):
                assert torch.equal(out[b, m, j], h[b, idx[b, m, j]])


def test_centred_links_change_the_cosines_not_the_attention() -> None:
    torch.manual_seed(0)
    plain = TextCrossAttention(dim=16, text_dim=12, num_heads=4)
    centred = TextCrossAttention(dim=16, text_dim=12, num_heads=4, centred_links=True)
    centred.load_state_dict(plain.state_dict())
    x = torch.randn(2, 5, 16)
    text = _text(2, 2, 4, 12, [[4, 2], [3, 0]])
    d_plain, out_plain = plain(x, text)
    d_centred, out_centred = centred(x, text)
    torch.testing.assert_close(d_centred, d_plain)  # the prediction path ignores the centring
    torch.testing.assert_close(out_centred.attn, out_plain.attn)
    q, k = plain.q(plain.norm(x)), plain.k(text.text)
    for b, n in [(0, 0), (0, 1), (1, 0)]:
        real = text.text_mask[b, n]
        kc = k[b, n, real] - k[b, n, real].mean(0)  # the mean over real words only: padding never enters
        expected = F.cosine_similarity(q[b][:, None], kc[None], dim=-1)  # (T, real words)
        torch.testing.assert_close(out_centred.cos[b, :, n, real], expected, rtol=1e-5, atol=1e-6)
        # Centred dots sum to zero over a caption's words, so not every link can be negative.
        assert bool((out_centred.cos[b, :, n, real] > 0).any(dim=-1).all())
