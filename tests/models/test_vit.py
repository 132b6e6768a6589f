"""The ViT encoder: shapes, token selection, fixed sin-cos positions, input checks and I-JEPA init."""

from __future__ import annotations

import math

import pytest
import torch

from tcjepa.models import vit as vit_module
from tcjepa.models.vit import VisionTransformer, ViTSpec, gather_tokens, sincos_pos_embed, vit_spec

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize(
    ("image", "patch", "dim", "depth", "heads"),
    [(32, 4, 64, 2, 2), (32, 8, 48, 1, 3), (48, 16, 32, 2, 4), (28, 7, 16, 1, 1)],
)
def test_output_shapes(image: int, patch: int, dim: int, depth: int, heads: int) -> None:
    spec = vit_spec("custom", image, patch, dim, depth, heads)
    model = VisionTransformer(spec)
    n = (image // patch) ** 2
    assert spec.num_patches == n and spec.grid == image // patch
    out = model(torch.rand(3, 3, image, image))
    assert out.shape == (3, n, dim)
    keep = torch.tensor([[0, 2, n - 1], [1, 2, 3], [n - 1, 0, 1]])
    assert model(torch.rand(3, 3, image, image), keep=keep).shape == (3, 3, dim)
    layers = model.intermediate_layers(torch.rand(2, 3, image, image), n_last=depth)
    assert len(layers) == depth and all(x.shape == (2, n, dim) for x in layers)


def test_named_sizes() -> None:
    assert vit_spec("base", 224, 16) == ViTSpec(224, 16, 768, 12, 12, 4.0)
    assert vit_spec("small", 224, 16, depth=6).depth == 6
    with pytest.raises(ValueError, match="custom"):
        vit_spec("enormous", 224, 16)
    with pytest.raises(ValueError, match="not divisible by its head count"):
        vit_spec("custom", 32, 4, 30, 2, 4)


def test_keep_all_equals_no_keep_and_keep_selects_tokens() -> None:
    torch.manual_seed(0)
    model = VisionTransformer(vit_spec("custom", 32, 4, 64, 2, 2)).eval()
    images = torch.rand(2, 3, 32, 32)
    full = model(images)
    everything = torch.arange(64).expand(2, 64)
    torch.testing.assert_close(model(images, keep=everything), full, rtol=0, atol=1e-6)
    # Keeping a subset is not the same as cutting the full output (attention sees fewer tokens) ...
    keep = torch.tensor([[3, 9, 40], [0, 1, 63]])
    part = model(images, keep=keep)
    assert not torch.allclose(part, gather_tokens(full, keep), atol=1e-4)
    # ... but the positions travel with the tokens: permuting the kept indices permutes the output.
    perm = model(images, keep=keep[:, [2, 0, 1]])
    torch.testing.assert_close(perm, part[:, [2, 0, 1]], rtol=0, atol=1e-5)


def test_sincos_positions() -> None:
    dim, grid = 16, 5
    pos = sincos_pos_embed(dim, grid)
    assert pos.shape == (grid * grid, dim)
    omega = [1.0 / 10000 ** (i / 4) for i in range(4)]
    for y in range(grid):
        for x in range(grid):
            expected = (
                [math.sin(y * w) for w in omega]
                + [math.cos(y * w) for w in omega]
                + [math.sin(x * w) for w in omega]
                + [math.cos(x * w) for w in omega]
            )
            torch.testing.assert_close(pos[y * grid + x], torch.tensor(expected), rtol=0, atol=1e-6)
    assert len({tuple(r) for r in pos.tolist()}) == grid * grid  # every position distinct
    model = VisionTransformer(vit_spec("custom", 20, 4, dim, 1, 2))
    assert torch.equal(model.pos_embed[0], pos)
    assert "pos_embed" not in model.state_dict()  # fixed, not learned and not saved
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_pos_embed(18, 4)


def test_wrong_image_size_is_a_clear_error() -> None:
    model = VisionTransformer(vit_spec("custom", 32, 4, 16, 1, 2))
    with pytest.raises(ValueError, match=r"expects 32x32 images, got \(48, 48\)"):
        model(torch.rand(1, 3, 48, 48))
    with pytest.raises(ValueError, match="32x32"):
        model(torch.rand(1, 3, 32, 28))


def test_normalises_its_own_input() -> None:
    model = VisionTransformer(vit_spec("custom", 8, 4, 16, 1, 2))
    images = torch.rand(2, 3, 8, 8)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = model.patch_embed((images - mean) / std).flatten(2).transpose(1, 2) + model.pos_embed
    torch.testing.assert_close(model.embed(images), expected)


def test_ijepa_init_and_residual_rescaling(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = vit_spec("custom", 32, 4, 64, 3, 2)
    torch.manual_seed(0)
    model = VisionTransformer(spec)
    monkeypatch.setattr(vit_module, "rescale_residual_branches", lambda blocks: None)
    torch.manual_seed(0)
    plain = VisionTransformer(spec)
    for layer_id, (block, ref) in enumerate(zip(model.blocks, plain.blocks), start=1):
        scale = math.sqrt(2.0 * layer_id)
        torch.testing.assert_close(block.attn.proj.weight, ref.attn.proj.weight / scale, rtol=1e-6, atol=0)
        torch.testing.assert_close(block.mlp.fc2.weight, ref.mlp.fc2.weight / scale, rtol=1e-6, atol=0)
        assert torch.equal(block.attn.qkv.weight, ref.attn.qkv.weight)
        assert torch.equal(block.mlp.fc1.weight, ref.mlp.fc1.weight)
        assert block.attn.proj.bias.abs().sum() == 0 and torch.equal(block.norm1.weight, torch.ones(64))
    # trunc_normal_(std=0.02) with torch's default cut at +-2 (absolute), as the I-JEPA code does.
    assert 0.018 < float(plain.blocks[0].attn.qkv.weight.detach().std()) < 0.022
