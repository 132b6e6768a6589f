"""The trainable text tower of the contrastive baselines: a small transformer over frozen word states.

The frozen encoder (``models/text.py``) gives one state per word; a contrastive method needs one vector per
caption in the image's embedding space. The head maps the states to its width, runs ``depth`` pre-LN blocks
(the image encoder's block, keys restricted to real words), takes the masked mean over real words and
projects. Positions are not added: the frozen encoder's states are already contextual (MiniLM) or carry
positions (the hashed ablation).
"""

from __future__ import annotations

import torch
from torch import nn

from .vit import Block, init_weights


class TextHead(nn.Module):
    def __init__(self, text_dim: int, width: int, depth: int, num_heads: int, out_dim: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.inp = nn.Linear(text_dim, width)
        self.blocks = nn.ModuleList(Block(width, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.proj = nn.Linear(width, out_dim, bias=False)
        init_weights(self)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``states`` (B, S, Dt), ``mask`` (B, S) True for real words -> (B, out_dim), not normalised.

        A caption without any real word gives a finite vector (its padding attends to itself) that callers
        must leave out; it must not be NaN, or a zero gradient times NaN would poison the weights.
        """
        keys = mask | ~mask.any(dim=1, keepdim=True)
        x = self.inp(states)
        for block in self.blocks:
            x = block(x, keys)
        x = self.norm(x)
        weights = mask.to(x.dtype).unsqueeze(-1)
        pooled = (x * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return self.proj(pooled)
