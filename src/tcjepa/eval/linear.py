"""Linear probes for a whole learning-rate x weight-decay grid, trained at once as parallel heads.

Features are standardised with training statistics; every head sees the same minibatches (one pass
over the data per epoch for the whole grid); the head with the best validation accuracy is reported
on the test sets. Labels of -1 are ignored (e.g. "colour of object 3" in a two-object scene).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

DEFAULT_LRS = (1e-3, 3e-3, 1e-2, 3e-2)
DEFAULT_WDS = (0.0, 1e-4, 1e-3)


@dataclass
class ProbeResult:
    val_acc: float
    test_acc: dict[str, float]  # per test set
    lr: float
    wd: float
    grid_val_acc: list[float]  # one per (lr, wd) head, lr-major


def standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    mean = train.mean(0, keepdim=True)
    std = train.std(0, keepdim=True).clamp_min(1e-6)
    return [(x - mean) / std for x in (train, *others)]


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per head accuracy over labelled rows; logits (G, n, C)."""
    keep = y >= 0
    if not keep.any():
        return torch.full((logits.shape[0],), float("nan"))
    return (logits[:, keep].argmax(-1) == y[keep]).float().mean(dim=1)


def linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    tests: dict[str, tuple[torch.Tensor, torch.Tensor]],
    num_classes: int,
    lrs: tuple[float, ...] = DEFAULT_LRS,
    wds: tuple[float, ...] = DEFAULT_WDS,
    epochs: int = 30,
    batch_size: int = 512,
    seed: int = 0,
) -> ProbeResult:
    """Train len(lrs)*len(wds) linear heads with AdamW (decoupled decay) on the same minibatches."""
    keep = train_y >= 0
    train_x, train_y = train_x[keep], train_y[keep]
    if len(train_y) == 0:
        raise ValueError("linear probe: no labelled training rows (every label is -1)")
    test_names = list(tests)
    xs = standardise(train_x.float(), val_x.float(), *[tests[k][0].float() for k in test_names])
    train_x, val_x, test_xs = xs[0], xs[1], xs[2:]
    grid = [(lr, wd) for lr in lrs for wd in wds]
    g, d = len(grid), train_x.shape[1]
    lr = torch.tensor([p[0] for p in grid]).view(g, 1, 1)
    wd = torch.tensor([p[1] for p in grid]).view(g, 1, 1)
    gen = torch.Generator().manual_seed(seed)
    w = torch.zeros(g, d, num_classes, requires_grad=True)
    b = torch.zeros(g, 1, num_classes, requires_grad=True)
    state = {p: (torch.zeros_like(p), torch.zeros_like(p)) for p in (w, b)}
    beta1, beta2, eps, t = 0.9, 0.999, 1e-8, 0
    n = len(train_y)
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=gen).split(batch_size):
            logits = torch.einsum("nd,gdc->gnc", train_x[idx], w) + b
            y = train_y[idx].repeat(g)
            loss = F.cross_entropy(logits.reshape(-1, num_classes), y) * g  # heads are independent
            gw, gb = torch.autograd.grad(loss, (w, b))
            t += 1
            with torch.no_grad():
                for p, grad, decay in ((w, gw, True), (b, gb, False)):
                    m, v = state[p]
                    m.mul_(beta1).add_(grad, alpha=1 - beta1)
                    v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                    step = (m / (1 - beta1**t)) / ((v / (1 - beta2**t)).sqrt() + eps)
                    if decay:
                        p.mul_(1 - lr * wd)
                    p.sub_(lr * step)
    with torch.no_grad():
        val_acc = _accuracy(torch.einsum("nd,gdc->gnc", val_x, w) + b, val_y)
        best = int(torch.nan_to_num(val_acc, nan=-1.0).argmax())
        test_acc = {
            name: float(_accuracy(torch.einsum("nd,dc->nc", x, w[best])[None] + b[best], tests[name][1])[0])
            for name, x in zip(test_names, test_xs)
        }
    return ProbeResult(float(val_acc[best]), test_acc, grid[best][0], grid[best][1], val_acc.tolist())
