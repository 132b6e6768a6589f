"""The conditioner family: every registered conditioner, and test ones for the input and norm hooks.

Parametrised over :data:`tcjepa.models.conditioning.CONDITIONERS` plus :mod:`.hook_conditioners`, so a
conditioner added to the registry is held to the same contract: switched off it is I-JEPA, padding and
absent captions change nothing, every parameter learns, ``cond_layers`` places it, bad names fail early.
"""

from __future__ import annotations

import pytest
import torch

from tcjepa.config import ConfigError, config_from_dict
from tcjepa.methods import build_method
from tcjepa.models import conditioning
from tcjepa.models.conditioning import CONDITIONERS, TextInputs
from tcjepa.models.predictor import Predictor

from .hook_conditioners import HOOK_CONDITIONERS, InputAdd, NormScale, switch_off

pytestmark = pytest.mark.usefixtures("single_thread")

NAMES = [*CONDITIONERS, *HOOK_CONDITIONERS]
SWITCHABLE = [n for n in NAMES if n not in ("input-prefix", "prefix-words", "sequence")]  # prefixes have no zero
DEPTH, TEXT_DIM = 3, 12


@pytest.fixture(autouse=True)
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, cls in HOOK_CONDITIONERS.items():
        monkeypatch.setitem(conditioning.CONDITIONERS, name, cls)


def _predictor(conditioning: str | None, seed: int = 0, **kw) -> Predictor:
    """A small predictor; ``conditioning=None`` builds I-JEPA's (no text width)."""
    torch.manual_seed(seed)
    text = {} if conditioning is None else {"text_dim": TEXT_DIM, "conditioning": conditioning}
    return Predictor(grid=4, enc_dim=24, dim=16, depth=DEPTH, num_heads=2, cond_heads=4, **text, **kw)


def _inputs(lengths: list[list[int]], words: int = 4, seed: int = 0):
    """Context features, indices, targets and captions for len(lengths) images; padding holds random states."""
    g = torch.Generator().manual_seed(seed)
    b = len(lengths)
    z = torch.randn(b, 5, 24, generator=g)
    ctx = torch.stack([torch.randperm(16, generator=g)[:5] for _ in range(b)])
    tgt = torch.stack([torch.randperm(16, generator=g)[:6].view(3, 2) for _ in range(b)])
    lens = torch.tensor(lengths)
    text = TextInputs(
        torch.randn(b, lens.shape[1], words, TEXT_DIM, generator=g), torch.arange(words) < lens[..., None], lens > 0
    )
    return z, ctx, tgt, text


def _randomise(pred: Predictor) -> None:
    """Non-zero conditioner weights, so that switched-on conditioners visibly change the predictions."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in pred.cond_params().values():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


@pytest.mark.parametrize("name", SWITCHABLE)
def test_switched_off_conditioner_gives_ijepa_predictions(name: str) -> None:
    plain = _predictor(None)
    pred = _predictor(name, seed=1)
    missing, unexpected = pred.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and set(missing) == set(pred.cond_params())
    _randomise(pred)
    z, ctx, tgt, text = _inputs([[4, 2], [3, 1]])
    with torch.no_grad():
        reference, _ = plain(z, ctx, tgt)
        on, _ = pred(z, ctx, tgt, text)
        if name != "none":
            assert not torch.allclose(on, reference, atol=1e-4)  # the text does change things when on
        for cond in pred.conditioners:
            switch_off(cond)
        off, _ = pred(z, ctx, tgt, text)
    assert torch.equal(off, reference)  # an exact zero added or an exact unit scale: no rounding to excuse


@pytest.mark.parametrize("name", NAMES)
def test_padded_words_and_absent_captions_change_nothing(name: str) -> None:
    pred = _predictor(name)
    _randomise(pred)
    z, ctx, tgt, text = _inputs([[4, 2], [0, 0], [1, 3]])
    _, _, _, wide = _inputs([[4, 2, 0], [0, 0, 0], [1, 3, 0]], words=6, seed=1)  # other random padding
    with torch.no_grad():
        wide.text[:, :2, :4] = text.text  # the same real words, more padded words and an absent caption
        base, links = pred(z, ctx, tgt, text)
        padded, _ = pred(z, ctx, tgt, wide)
        text_free, _ = pred(z, ctx, tgt)
    torch.testing.assert_close(padded, base, rtol=1e-5, atol=1e-6)
    # The image without captions is predicted as without text (up to a masked key's rounding).
    torch.testing.assert_close(base[1], text_free[1], rtol=1e-5, atol=1e-6)
    assert len(links) == (DEPTH if pred.has_word_links else 0)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_conditioner_parameter(name: str) -> None:
    pred = _predictor(name)  # as initialised: zero-initialised outputs must not block the others' gradients
    z, ctx, tgt, text = _inputs([[4, 2], [3, 0]])
    out, _ = pred(z, ctx, tgt, text)
    (out - torch.randn_like(out)).square().mean().backward()
    params = pred.cond_params()
    assert bool(params) == (name != "none")
    for key, p in params.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{key} gets no gradient"
        assert torch.isfinite(p.grad).all()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("layers", "blocks"), [("all", [0, 1, 2]), ("last", [2]), ([0, -1], [0, 2]), ([1], [1])])
def test_cond_layers_place_the_parameters(name: str, layers, blocks: list[int]) -> None:
    pred = _predictor(name, cond_layers=layers)
    block_hooks = bool(CONDITIONERS[name].hooks - {"input"})
    have = {int(k.split(".")[1]) for k in pred.cond_params() if k.startswith("blocks.")}
    assert have == (set(blocks) if block_hooks else set())
    for i, block in enumerate(pred.blocks):
        assert (block.cond is not None) == (block_hooks and i in blocks)
    z, ctx, tgt, text = _inputs([[4, 2], [3, 0]])
    _, links = pred(z, ctx, tgt, text)
    assert len(links) == (len(blocks) if pred.has_word_links else 0)


def test_default_keeps_the_checkpoint_keys() -> None:
    """Old checkpoints load: the words conditioner's keys, in the order they were created."""
    keys = [k for k in _predictor("words").state_dict() if k.startswith("blocks.0.")]
    parts = ["norm1", "attn.qkv", "attn.proj", "cond.norm", "cond.q", "cond.k", "cond.v", "cond.proj", "norm2"]
    parts += ["mlp.fc1", "mlp.fc2"]
    assert keys == [f"blocks.0.{p}.{w}" for p in parts for w in ("weight", "bias")]
    assert not any(k.startswith("cond_input") for k in _predictor("words").state_dict())


def test_none_is_ijepas_predictor() -> None:
    plain, none = _predictor(None), _predictor("none")
    assert plain.state_dict().keys() == none.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), none.state_dict().values()))
    assert not none.conditioned and not none.has_word_links and none.cond_params() == {}
    z, ctx, tgt, text = _inputs([[4, 2], [3, 1]])
    with torch.no_grad():
        a, _ = plain(z, ctx, tgt)
        b, links = none(z, ctx, tgt, text)
    assert torch.equal(a, b) and links == []


@pytest.mark.parametrize("name", ["word", "wrds", "cross"])
def test_bad_conditioning_name_names_the_choices(name: str) -> None:
    with pytest.raises(ConfigError, match="model.predictor.conditioning") as err:
        _predictor(name)
    assert "words, caption, adaln, input, sequence, none" in str(err.value)
    if name != "cross":
        assert "Did you mean 'words'?" in str(err.value)


@pytest.mark.parametrize(
    ("layers", "match"),
    [
        ([3], r"block\(s\) \[3\].*depth=3.*0\.\.2"),
        ("first", "all, last or a list"),
        ([], "conditioning=none"),
        ([1, -2], "twice"),
    ],
)
def test_bad_cond_layers_fail_with_the_key(layers, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _predictor("words", cond_layers=layers)
    with pytest.raises(ConfigError, match="model.predictor.cond_layers"):
        config_from_dict({"model": {"predictor": {"depth": DEPTH, "cond_layers": layers}}})


def test_config_keys_reach_the_predictor(tiny_cfg) -> None:
    cfg = tiny_cfg("model.predictor.cond_layers=[0, -1]", "model.predictor.conditioning=words")
    assert cfg.model.predictor.cond_layers == [0, -1]
    assert config_from_dict(cfg.to_dict()).model.predictor.cond_layers == [0, -1]  # checkpoints round-trip
    depth = cfg.model.predictor.depth
    method = build_method(cfg, text_dim=8)
    assert [b.cond is not None for b in method.predictor.blocks] == [i in (0, depth - 1) for i in range(depth)]
    with pytest.raises(ConfigError, match="Did you mean 'words'"):
        build_method(tiny_cfg("model.predictor.conditioning=Words"), text_dim=8)
    with pytest.raises(ConfigError, match="model.predictor.cond_layers"):
        tiny_cfg(f"model.predictor.cond_layers=[{depth}]")


def test_prefix_tokens_are_sliced_off_and_not_link_queries() -> None:
    pred = _predictor("prefix-words")
    assert isinstance(pred.cond_input, InputAdd) and pred.has_word_links
    z, ctx, tgt, text = _inputs([[4, 2], [3, 1]])
    out, links = pred(z, ctx, tgt, text)
    assert out.shape == (2, 3, 2, 24)
    length = 2 + 5 + 2  # prefix, context, targets of one copy
    for o in links:
        assert o.prefix == 2 and o.cos.shape[1] == 3 * length
        want = (torch.arange(length) >= 2).repeat(3).expand(2, -1)
        assert torch.equal(o.query_mask, want)


@pytest.mark.parametrize("name", ["norm-scale", "none", "caption", "adaln", "input", "sequence"])
def test_tcjepa_without_word_links_has_no_regulariser(tiny_cfg, make_batch, add_text, name: str) -> None:
    from tcjepa.eval.grounding import patch_word_cosines

    torch.manual_seed(0)
    method = build_method(tiny_cfg(f"model.predictor.conditioning={name}", "loss.sparse_form=none"), text_dim=32)
    assert not method.predictor.has_word_links
    assert not method.grounded
    batch = add_text(make_batch())
    out = method(batch, diagnostics=True)
    loss, metrics = out.loss, out.logged()
    assert float(metrics["loss_sparse"]) == 0 and float(metrics["loss_consistency"]) == 0
    assert float(loss.detach()) == float(metrics["loss_pred"])
    assert not any(k.startswith(("pos_frac_l", "attn_entropy_l")) for k in metrics)
    with pytest.raises(ValueError, match="no patch-word links"):
        patch_word_cosines(method.eval(), batch["images"], TextInputs.from_batch(batch))


class _NormSpy(NormScale):
    """Records what the norm hook receives and passes it through."""

    seen: list[tuple[int, str, torch.Tensor]] = []

    def modulate(self, h: torch.Tensor, site: str, text: TextInputs) -> torch.Tensor:
        self.seen.append((self.layer, site, h.detach().clone()))
        return h

    @classmethod
    def from_spec(cls, spec):
        spy = cls(spec)
        spy.layer = spec.layer
        return spy


def test_norm_hook_sees_both_norms_of_each_conditioned_block(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(conditioning.CONDITIONERS, "spy", _NormSpy)
    monkeypatch.setattr(_NormSpy, "seen", [])
    pred = _predictor("spy", cond_layers=[0, 2])
    inputs: list[torch.Tensor] = []
    pred.blocks[0].register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach().clone()))
    z, ctx, tgt, text = _inputs([[4, 2], [3, 0]])
    with torch.no_grad():
        pred(z, ctx, tgt, text)
        assert [(layer, site) for layer, site, _ in _NormSpy.seen] == [
            (0, "norm1"),
            (0, "norm2"),
            (2, "norm1"),
            (2, "norm2"),
        ]
        # Folded per image: the M copies of (context + targets) of an image on one axis.
        first = _NormSpy.seen[0][2]
        assert first.shape == (2, 3 * (5 + 2), 16)
        torch.testing.assert_close(first, pred.blocks[0].norm1(inputs[0]).reshape(2, -1, 16), rtol=0, atol=0)
        pred(z, ctx, tgt)  # without text no hook runs
    assert len(_NormSpy.seen) == 4


@pytest.mark.parametrize(("name", "layers", "prefix"), [("words", "last", 0), ("prefix-words", "all", 2)])
def test_grounding_reads_the_conditioned_layers_after_the_prefix(tiny_cfg, name: str, layers: str, prefix: int):
    from tcjepa.eval.grounding import patch_word_cosines

    torch.manual_seed(0)
    cfg = tiny_cfg(f"model.predictor.conditioning={name}", f"model.predictor.cond_layers={layers}")
    method = build_method(cfg, text_dim=8).eval()
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 32, 32, generator=g)
    text = TextInputs(
        torch.randn(2, 3, 5, 8, generator=g), torch.ones(2, 3, 5, dtype=torch.bool), torch.ones(2, 3, dtype=bool)
    )
    cos = patch_word_cosines(method, images, text)
    # Reference: the context in reverse order (tokens are permutation-equivariant), read after the known prefix.
    p = method.context_encoder.spec.num_patches
    with torch.no_grad():
        z = method.context_encoder(images).flip(1)
        ctx = torch.arange(p).flip(0).expand(2, p)
        _, links = method.predictor(z, ctx, torch.zeros(2, 1, 1, dtype=torch.long), text)
    assert len(links) == (1 if layers == "last" else cfg.model.predictor.depth)
    want = torch.stack([o.cos[:, prefix : prefix + p].flip(1) for o in links]).mean(0)
    torch.testing.assert_close(cos, want, rtol=1e-4, atol=1e-5)
