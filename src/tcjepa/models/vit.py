"""Vision Transformer encoder as I-JEPA uses it: pre-LN blocks, fixed 2-D sin-cos positions, no [cls].

The context encoder runs only on the kept (context) tokens: positions are added first, then the
tokens are gathered, so the sequence the transformer sees is short and the cost scales with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

# (embed_dim, depth, num_heads, mlp_ratio)
VIT_SIZES: dict[str, tuple[int, int, int, float]] = {
    "tiny": (192, 12, 3, 4.0),
    "small": (384, 12, 6, 4.0),
    "base": (768, 12, 12, 4.0),
    "large": (1024, 24, 16, 4.0),
    "huge": (1280, 32, 16, 4.0),
    "giant": (1408, 40, 16, 48 / 11),
}

# ImageNet statistics: the encoder normalises its own [0, 1] input so exported weights are self-contained.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ViTSpec:
    image_size: int
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid**2


def vit_spec(
    size: str,
    image_size: int,
    patch_size: int,
    embed_dim: int | None = None,
    depth: int | None = None,
    num_heads: int | None = None,
    mlp_ratio: float | None = None,
) -> ViTSpec:
    """A named size with optional overrides; ``size='custom'`` takes the overrides alone."""
    if size == "custom":
        if embed_dim is None or depth is None or num_heads is None:
            raise ValueError("a custom ViT needs embed_dim, depth and num_heads")
        base = (embed_dim, depth, num_heads, 4.0)
    elif size in VIT_SIZES:
        base = VIT_SIZES[size]
    else:
        raise ValueError(f"unknown ViT size {size!r}; choose one of {', '.join(VIT_SIZES)} or custom")
    d = embed_dim or base[0]
    h = num_heads or base[2]
    if d % h:
        raise ValueError(f"ViT width {d} is not divisible by its head count {h}")
    if image_size % patch_size:
        raise ValueError(f"image size {image_size} is not divisible by patch size {patch_size}")
    return ViTSpec(image_size, patch_size, d, depth or base[1], h, mlp_ratio or base[3])


def sincos_pos_embed(dim: int, grid: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position codes, (grid*grid, dim), rows in raster order: half the width encodes y, half x."""
    if dim % 4:
        raise ValueError(f"sin-cos position codes need a width divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    coords = torch.arange(grid, dtype=torch.float64)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.reshape(-1, 1) * omega[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(yy), encode(xx)], dim=1).float()


def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, N, D), idx (B, K) -> (B, K, D)."""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``key_mask`` (B, N) bool, True for real tokens: padding is never attended to (it still gets an output)."""
        b, n, d = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        if key_mask is None:  # no attn_mask argument at all: the unpadded path stays bit-identical
            out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        else:
            out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=key_mask[:, None, None, :])
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-LN transformer block."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), key_mask)
        return x + self.mlp(self.norm2(x))


def run_block(block: nn.Module, checkpointed: bool, *args: Any) -> Any:
    """``block(*args)``; when ``checkpointed`` and a graph is being built, only the inputs are kept and the
    block's activations are recomputed in backward (``train.activation_checkpointing``): the same numbers
    for about one more forward of compute. Non-reentrant, so any inputs and outputs (dataclasses) work."""
    if checkpointed and torch.is_grad_enabled():
        return checkpoint(block, *args, use_reentrant=False)
    return block(*args)


def init_weights(module: nn.Module) -> None:
    """I-JEPA init: truncated normal (std 0.02) for linear/conv weights, zero biases, unit LayerNorms."""
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Conv2d):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def rescale_residual_branches(blocks: nn.ModuleList) -> None:
    """Divide each block's residual output projections by sqrt(2 * layer_id), as I-JEPA does."""
    for layer_id, block in enumerate(blocks, start=1):
        for m in block.modules():
            if isinstance(m, Attention | MLP):
                out = m.proj if isinstance(m, Attention) else m.fc2
                out.weight.data.div_(math.sqrt(2.0 * layer_id))


class VisionTransformer(nn.Module):
    """Takes images in [0, 1], returns patch features (B, N, D) after a final LayerNorm."""

    def __init__(self, spec: ViTSpec):
        super().__init__()
        self.spec = spec
        d = spec.embed_dim
        self.patch_embed = nn.Conv2d(3, d, kernel_size=spec.patch_size, stride=spec.patch_size)
        self.register_buffer("pos_embed", sincos_pos_embed(d, spec.grid)[None], persistent=False)
        self.register_buffer("mean", torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGE_STD).view(1, 3, 1, 1), persistent=False)
        self.blocks = nn.ModuleList(Block(d, spec.num_heads, spec.mlp_ratio) for _ in range(spec.depth))
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.checkpointing = False  # recompute block activations in backward (see run_block)
        init_weights(self)
        rescale_residual_branches(self.blocks)

    @property
    def embed_dim(self) -> int:
        return self.spec.embed_dim

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != self.spec.image_size or images.shape[-2] != self.spec.image_size:
            raise ValueError(
                f"encoder expects {self.spec.image_size}x{self.spec.image_size} images, got {tuple(images.shape[-2:])}"
            )
        x = self.patch_embed((images - self.mean) / self.std)
        return x.flatten(2).transpose(1, 2) + self.pos_embed

    def forward(
        self, images: torch.Tensor, keep: torch.Tensor | None = None, keep_valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``keep`` (B, K) patch indices: encode only those tokens (the context encoder's view).

        ``keep_valid`` (B, K) bool marks the real slots of a padded ``keep`` (mask.truncate=pad); padded
        slots are kept out of attention, and their outputs mean nothing.
        """
        if keep_valid is not None and (keep is None or keep_valid.shape != keep.shape):
            got = None if keep is None else tuple(keep.shape)
            raise ValueError(
                f"keep_valid {tuple(keep_valid.shape)} needs keep indices of the same shape, got {got}; "
                "pass the mask batch's context together with its context_valid (mask.truncate=pad)"
            )
        x = self.embed(images)
        if keep is not None:
            x = gather_tokens(x, keep)
        for block in self.blocks:
            x = run_block(block, self.checkpointing, x, keep_valid)
        return self.norm(x)

    def intermediate_layers(self, images: torch.Tensor, n_last: int) -> list[torch.Tensor]:
        """Outputs of the last ``n_last`` blocks, each through the final LayerNorm (for last-4-layer probes)."""
        x = self.embed(images)
        outs = []
        first = len(self.blocks) - n_last
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i >= first:
                outs.append(self.norm(x))
        return outs
