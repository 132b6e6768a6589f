"""The patch-word regularisers: Eq. 3-4 against a loop-by-loop reference, and every form on hand-made numbers."""

from __future__ import annotations

import math

import pytest
import torch

from tcjepa.losses.sparsity import link_stats, sparsity_losses
from tcjepa.methods import build_method
from tcjepa.models.conditioning import CondOutput, TextInputs

pytestmark = pytest.mark.usefixtures("single_thread")


def _naive_paper_losses(layer_inputs: list[torch.Tensor], conds: list, text: TextInputs) -> tuple[float, float]:
    """Paper Eq. 3-4 (docs/method.md §4) with explicit loops over images, captions, tokens, layers and words.

    O_i^(l) = relu(cos(W_Q q_i, W_K t_s)) over the full projected width, for every query token i (context
    and mask tokens of every target-block copy) and every real word s. Per caption:
    L_sparse = mean_i mean_l sum_s O, L_consistency = mean_i mean_l sum_s |O - mean_l O|.
    Then the mean over the captions present.
    """
    with torch.no_grad():
        queries = [c.q(c.norm(x)).tolist() for c, x in zip(conds, layer_inputs)]  # L x (B, T, d)
        keys = [c.k(text.text).tolist() for c in conds]  # L x (B, N, S, d)

    def cosine(a: list[float], b: list[float]) -> float:
        dot = sum(x * y for x, y in zip(a, b))
        return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))

    n_layers = len(conds)
    b_size, n_caps, n_words = text.text_mask.shape
    sparse_terms, consistency_terms = [], []
    for b in range(b_size):
        n_tokens = len(queries[0][b])
        for n in range(n_caps):
            if not text.caption_mask[b, n]:
                continue
            words = [s for s in range(n_words) if text.text_mask[b, n, s]]
            sparse_sum = consistency_sum = 0.0
            for i in range(n_tokens):
                maps = [
                    [max(cosine(queries[lay][b][i], keys[lay][b][n][s]), 0.0) for s in words] for lay in range(n_layers)
                ]
                mean_map = [sum(maps[lay][j] for lay in range(n_layers)) / n_layers for j in range(len(words))]
                for lay in range(n_layers):
                    sparse_sum += sum(maps[lay]) / n_layers
                    consistency_sum += sum(abs(o - m) for o, m in zip(maps[lay], mean_map)) / n_layers
            sparse_terms.append(sparse_sum / n_tokens)
            consistency_terms.append(consistency_sum / n_tokens)
    return sum(sparse_terms) / len(sparse_terms), sum(consistency_terms) / len(consistency_terms)


def test_paper_form_matches_a_naive_reference(tiny_cfg, make_batch, add_text) -> None:
    torch.manual_seed(0)
    # Three layers: with two, |O_l - mean_l O| cannot be told apart from half of |O_1 - O_0|.
    tc = build_method(tiny_cfg("method=tcjepa", "loss.sparse_form=paper", "model.predictor.depth=3"), text_dim=32)
    # Different caption counts per image and ragged lengths, so every average is exercised.
    batch = add_text(make_batch(batch_size=2), captions=3, words=5, lengths=[[5, 2, 0], [3, 4, 1]])
    conds = [block.cond for block in tc.predictor.blocks]
    inputs: list[torch.Tensor] = []
    hooks = [c.register_forward_hook(lambda _m, args, _out: inputs.append(args[0].detach())) for c in conds]
    try:
        metrics = tc(batch).terms
    finally:
        for h in hooks:
            h.remove()
    assert len(inputs) == len(conds)
    b, m, kt = batch["mask_targets"].shape
    assert inputs[0].shape[:2] == (b, m * (batch["mask_context"].shape[1] + kt))  # every token of every copy
    sparse, consistency = _naive_paper_losses(inputs, conds, TextInputs.from_batch(batch))
    assert sparse > 0 and consistency > 0
    assert float(metrics["loss_sparse"]) == pytest.approx(sparse, rel=1e-5)
    assert float(metrics["loss_consistency"]) == pytest.approx(consistency, rel=1e-5)


# Hand-made similarities: 2 layers, 1 image, 1 token, 3 caption slots of 3 words each.
# Caption 0 has 3 real words; caption 1 has 2 (its third value is padding and must be ignored);
# caption 2 is absent (its values must be ignored).
COS = torch.tensor(
    [
        [[[[0.5, -0.2, 0.3], [0.4, 0.9, 0.7], [0.9, 0.9, 0.9]]]],  # layer 0
        [[[[0.1, 0.2, -0.4], [-0.1, 0.6, 0.8], [0.9, 0.9, 0.9]]]],  # layer 1
    ]
)  # (L, B, T, N, S)
# Attention for the entropy form: (L, B, H=2, T, N, S); padding and the absent caption carry garbage.
ATTN = torch.tensor(
    [
        [
            [
                [[[0.5, 0.5, 0.0], [0.5, 0.5, 0.3], [0.2, 0.2, 0.6]]],
                [[[1.0, 0.0, 0.0], [0.5, 0.5, 0.9], [0.2, 0.2, 0.6]]],
            ]
        ],
        [
            [
                [[[0.25, 0.25, 0.5], [1.0, 0.0, 0.4], [0.2, 0.2, 0.6]]],
                [[[1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.4], [0.2, 0.2, 0.6]]],
            ]
        ],
    ]
)
LN2, LN3 = math.log(2), math.log(3)
# (form, L_sparse, L_consistency), worked out by hand in the comments of each row:
EXPECTED = [
    # relu maps: c0 l0 [.5,0,.3] l1 [.1,.2,0]; c1 l0 [.4,.9] l1 [0,.6]. Sums per layer: c0 .8,.3; c1 1.3,.6.
    # sparse (.55 + .95)/2; consistency: c0 layer mean [.3,.1,.15] -> .45 per layer, c1 [.2,.75] -> .35.
    ("paper", 0.75, 0.4),
    # the same divided by the caption's real words (3 and 2).
    ("mean", (0.55 / 3 + 0.95 / 2) / 2, (0.45 / 3 + 0.35 / 2) / 2),
    # tau = 0.25: c0 l0 [.25,0,.05] l1 0 -> (.3/3 + 0)/2 = .05; c1 l0 [.15,.65] l1 [0,.35] -> (.4 + .175)/2.
    # consistency: c0 mean [.125,0,.025] -> .15/3 per layer; c1 mean [.075,.5] -> .225/2 per layer.
    ("margin", (0.05 + 0.2875) / 2, (0.05 + 0.1125) / 2),
    # k = 1 drops each token's largest word: c0 (.3/3 + .1/3)/2, c1 (.4/2 + 0/2)/2; consistency as "mean".
    ("topk", ((0.3 / 3 + 0.1 / 3) / 2 + (0.4 / 2) / 2) / 2, (0.45 / 3 + 0.35 / 2) / 2),
    # entropy per head, averaged over heads then layers: c0 (ln2/2 + (1.5 ln2 + ln3)/2)/2, c1 (ln2 + 0)/2.
    # consistency on head-averaged attention: c0 l0 [.75,.25,0] l1 [7/24,7/24,5/12] -> 22/48/3 per layer;
    # c1 l0 [.5,.5] l1 [1,0] -> .5/2 per layer.
    ("entropy", ((2.5 * LN2 + LN3) / 4 + LN2 / 2) / 2, (22 / 144 + 0.25) / 2),
    ("none", 0.0, 0.0),
]


def _hand_made() -> tuple[list[CondOutput], TextInputs]:
    outputs = [CondOutput(cos=COS[i], attn=ATTN[i]) for i in range(2)]
    text = TextInputs(
        text=torch.zeros(1, 3, 3, 4),
        text_mask=torch.tensor([[[True, True, True], [True, True, False], [True, True, True]]]),
        caption_mask=torch.tensor([[True, True, False]]),
    )
    return outputs, text


@pytest.mark.parametrize(("form", "sparse", "consistency"), EXPECTED, ids=[e[0] for e in EXPECTED])
def test_every_form_on_hand_made_similarities(form: str, sparse: float, consistency: float) -> None:
    outputs, text = _hand_made()
    got_sparse, got_consistency = sparsity_losses(outputs, text, form, margin=0.25, topk=1)
    assert float(got_sparse) == pytest.approx(sparse, abs=1e-6)
    assert float(got_consistency) == pytest.approx(consistency, abs=1e-6)


def test_regularisers_are_means_over_tokens() -> None:
    """A second token with a copy of the first one's similarities leaves every form unchanged."""
    outputs, text = _hand_made()
    doubled = [CondOutput(cos=o.cos.repeat(1, 2, 1, 1), attn=o.attn.repeat(1, 1, 2, 1, 1)) for o in outputs]
    for form, sparse, consistency in EXPECTED:
        got = sparsity_losses(doubled, text, form, margin=0.25, topk=1)
        assert [float(x) for x in got] == pytest.approx([sparse, consistency], abs=1e-6), form


def test_unknown_form_is_rejected() -> None:
    outputs, text = _hand_made()
    with pytest.raises(ValueError, match="paper, mean, margin, topk, entropy, none"):
        sparsity_losses(outputs, text, "l2")


def test_link_stats_count_real_words_only() -> None:
    outputs, text = _hand_made()
    stats = link_stats(outputs, text)
    # Real words: layer 0 has 4 of 5 cosines > 0 ([.5,-.2,.3], [.4,.9]); layer 1 has 3 of 5.
    assert stats["pos_frac_l0"] == pytest.approx(4 / 5)
    assert stats["pos_frac_l1"] == pytest.approx(3 / 5)
    # Entropy over the present captions, averaged over heads and tokens: l0 (ln2 + 0 + ln2 + ln2) / 4.
    assert stats["attn_entropy_l0"] == pytest.approx(3 * LN2 / 4, abs=1e-6)


@pytest.mark.parametrize("form", ["paper", "mean", "margin", "topk", "entropy"])
def test_every_form_has_finite_gradients_with_padding_and_zero_attention(form: str) -> None:
    """Padding words and underflowed softmax entries hold exact zeros; no form may turn them into NaN."""
    outputs, text = _hand_made()
    params = [(o.cos.clone().requires_grad_(), o.attn.clone().requires_grad_()) for o in outputs]
    outs = [CondOutput(cos=c, attn=a) for c, a in params]
    sparse, consistency = sparsity_losses(outs, text, form, margin=0.25, topk=1)
    (sparse + consistency).backward()
    grads = [t.grad for pair in params for t in pair if t.grad is not None]  # cos or attn, by form
    assert grads and all(torch.isfinite(g).all() for g in grads), form
