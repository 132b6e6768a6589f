"""Weighted k-nearest-neighbour probe (the DINO protocol): an evaluation with no training at all.

A linear probe can rescue features whose classes are linearly separable but scattered; k-NN asks
whether neighbours in the raw cosine geometry already share a label, which is what retrieval-style
uses of an encoder need. Each query looks up its ``max(ks)`` nearest training rows once; every k then
votes with the first k of them, each neighbour weighted by ``exp(cos / T)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_KS = (10, 20, 100, 200)


def knn_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    tests: dict[str, tuple[torch.Tensor, torch.Tensor]],
    num_classes: int,
    ks: tuple[int, ...] = DEFAULT_KS,
    temperature: float = 0.07,
    chunk: int = 1024,
) -> dict[int, dict[str, float]]:
    """Accuracy ``result[k][test_name]`` of the temperature-weighted k-NN vote for every requested k.

    Rows labelled < 0 are dropped from the training set and not counted in a test set (a test set with
    no labelled row scores nan). A k larger than the training set is clipped to it; the result is still
    keyed by the k that was asked for. Queries go ``chunk`` at a time, so memory is O(chunk x n_train).
    """
    if not ks:
        raise ValueError("knn probe: no k given")
    keep = train_y >= 0
    bank = F.normalize(train_x[keep].float(), dim=1)
    bank_y = train_y[keep].long()
    n = len(bank_y)
    if n == 0:
        raise ValueError("knn probe: no labelled training rows (every label is -1)")
    k_max = min(max(ks), n)
    result: dict[int, dict[str, float]] = {k: {} for k in ks}
    for name, (x, y) in tests.items():
        labelled = y >= 0
        x, y = x[labelled], y[labelled].long()
        correct = dict.fromkeys(ks, 0)
        for start in range(0, len(y), chunk):
            query = F.normalize(x[start : start + chunk].float(), dim=1)
            sim, idx = (query @ bank.T).topk(k_max, dim=1)  # sorted: the first k are the k nearest
            # exp(sim / T) rescaled per query by exp(-max sim / T): the same argmax, but no overflow for small T.
            weight = ((sim - sim[:, :1]) / temperature).exp()
            neighbour_y = bank_y[idx]
            truth = y[start : start + chunk]
            for k in ks:
                kk = min(k, n)
                votes = torch.zeros(len(truth), num_classes).scatter_add_(1, neighbour_y[:, :kk], weight[:, :kk])
                correct[k] += int((votes.argmax(1) == truth).sum())
        for k in ks:
            result[k][name] = correct[k] / len(y) if len(y) else float("nan")
    return result
