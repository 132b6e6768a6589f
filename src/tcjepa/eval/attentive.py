"""Attentive probe (the V-JEPA protocol): a learned query cross-attends over frozen patch features.

Average pooling throws away *where* things are: a label carried by one patch among many is diluted
by the rest, and a linear probe on the pooled vector cannot get it back. The attentive probe lets a
few learned queries pick the patches that matter (multi-head attention with LayerNorm on the patches
and learned key/value projections), then classifies the attended vector with LayerNorm + Linear.
One probe is trained per learning rate, all from the same seeded initialisation and minibatch order;
the one with the best validation accuracy is reported on the test sets.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .linear import ProbeResult

DEFAULT_LRS = (1e-3, 3e-3)


class AttentivePooler(nn.Module):
    """``queries`` learned queries attend over (B, N, D) patches; their outputs are averaged and classified."""

    def __init__(self, dim: int, num_classes: int, heads: int = 4, queries: int = 1):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attentive probe: feature width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.query = nn.Parameter(torch.randn(1, queries, dim) * 0.02)
        self.norm = nn.LayerNorm(dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out_norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        b, n, d = patches.shape
        h = self.heads
        k, v = self.kv(self.norm(patches)).view(b, n, 2, h, d // h).permute(2, 0, 3, 1, 4)  # each (B, h, N, d/h)
        # The query needs no projection of its own: it is a free parameter already.
        q = self.query.expand(b, -1, -1).reshape(b, -1, h, d // h).transpose(1, 2)  # (B, h, Q, d/h)
        attended = F.scaled_dot_product_attention(q, k, v)  # (B, h, Q, d/h)
        pooled = attended.transpose(1, 2).reshape(b, -1, d).mean(dim=1)
        return self.head(self.out_norm(pooled))


@torch.no_grad()
def _accuracy(model: nn.Module, patches: torch.Tensor, y: torch.Tensor, batch_size: int, device) -> float:
    keep = (y >= 0).nonzero().squeeze(1)
    if len(keep) == 0:
        return float("nan")
    model.eval()
    right = 0
    for idx in keep.split(batch_size):
        logits = model(patches[idx].to(device, torch.float32))
        right += int((logits.argmax(-1).cpu() == y[idx]).sum())
    return right / len(keep)


def _train_one(
    patches: torch.Tensor,
    y: torch.Tensor,
    rows: torch.Tensor,
    num_classes: int,
    lr: float,
    wd: float,
    epochs: int,
    batch_size: int,
    heads: int,
    queries: int,
    seed: int,
    device,
) -> nn.Module:
    # Seed the initialisation without touching the caller's global RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AttentivePooler(patches.shape[-1], num_classes, heads, queries).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(rows) / batch_size)
    total, step = epochs * steps_per_epoch, 0
    model.train()
    for _ in range(epochs):
        for idx in rows[torch.randperm(len(rows), generator=gen)].split(batch_size):
            # Cosine decay to zero: the final weights are the ones evaluated, so let them settle.
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            logits = model(patches[idx].to(device, torch.float32))
            loss = F.cross_entropy(logits, y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    return model


def attentive_probe(
    train_patches: torch.Tensor,
    train_y: torch.Tensor,
    val_patches: torch.Tensor,
    val_y: torch.Tensor,
    tests: dict[str, tuple[torch.Tensor, torch.Tensor]],
    num_classes: int,
    lrs: tuple[float, ...] = DEFAULT_LRS,
    wd: float = 0.05,
    epochs: int = 20,
    batch_size: int = 256,
    heads: int = 4,
    seed: int = 0,
    queries: int = 1,
    device: torch.device | str = "cpu",
) -> ProbeResult:
    """Train one attentive probe per lr on (n, N, D) patches (fp16 is fine: batches are cast to float32).

    Rows labelled < 0 are skipped in training and not counted in validation or test accuracy. Patches
    stay where they are; only each minibatch moves to ``device``. ``grid_val_acc`` has one entry per lr.
    """
    rows = (train_y >= 0).nonzero().squeeze(1)
    if len(rows) == 0:
        raise ValueError("attentive probe: no labelled training rows (every label is -1)")
    train_y = train_y.long()
    best_key, best_model, best_lr, grid_acc = -2.0, None, lrs[0], []
    for lr in lrs:
        model = _train_one(
            train_patches, train_y, rows, num_classes, lr, wd, epochs, batch_size, heads, queries, seed, device
        )
        acc = _accuracy(model, val_patches, val_y, batch_size, device)
        grid_acc.append(acc)
        key = -1.0 if math.isnan(acc) else acc  # an unlabelled validation set: keep the first lr
        if key > best_key:  # strict: the first lr wins ties
            best_key, best_model, best_lr = key, model, lr
    test_acc = {name: _accuracy(best_model, x, y, batch_size, device) for name, (x, y) in tests.items()}
    return ProbeResult(grid_acc[lrs.index(best_lr)], test_acc, best_lr, wd, grid_acc)
