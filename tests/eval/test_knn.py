"""k-NN probe: exact answers on hand-placed points, and agreement with a query-by-query reference."""

from __future__ import annotations

import math

import pytest
import torch

from tcjepa.eval.knn import knn_probe

pytestmark = pytest.mark.usefixtures("single_thread")


def _on_circle(angles: list[float]) -> torch.Tensor:
    a = torch.tensor(angles)
    return torch.stack([a.cos(), a.sin()], dim=1)


def test_well_separated_clusters_are_all_right() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 16, generator=g) * 5
    train_y = torch.arange(3).repeat_interleave(50)
    test_y = torch.arange(3).repeat_interleave(20)
    train_x = centres[train_y] + 0.1 * torch.randn(150, 16, generator=g)
    test_x = centres[test_y] + 0.1 * torch.randn(60, 16, generator=g)
    out = knn_probe(train_x, train_y, {"test": (test_x, test_y)}, num_classes=3, ks=(1, 10, 20))
    assert out == {1: {"test": 1.0}, 10: {"test": 1.0}, 20: {"test": 1.0}}
    # exp(1 / 1e-3) overflows float32; the per-query rescaling must keep the vote finite and right.
    out = knn_probe(train_x, train_y, {"test": (test_x, test_y)}, num_classes=3, ks=(20,), temperature=1e-3)
    assert out == {20: {"test": 1.0}}


def test_small_tight_cluster_wins_for_small_k_and_loses_for_large_k() -> None:
    # Class 0: three points at angle ~0. Class 1: forty points 0.2-0.6 rad away on both sides.
    # With T = 0.07 a class-1 neighbour weighs exp((cos(theta) - 1) / T) ~ 0.08-0.75 of a class-0 one:
    # the nearest three (all class 0) decide k <= 3; all 43 together outvote them (~13 against ~3).
    a_angles = [-0.005, 0.0, 0.005]
    b_angles = [s * (0.2 + 0.4 * i / 19) for s in (-1, 1) for i in range(20)]
    train_x = _on_circle(a_angles + b_angles)
    train_y = torch.tensor([0] * 3 + [1] * 40)
    query = (_on_circle([0.001]), torch.tensor([0]))
    out = knn_probe(train_x, train_y, {"inside": query}, num_classes=2, ks=(1, 3, 43), temperature=0.07)
    assert out == {1: {"inside": 1.0}, 3: {"inside": 1.0}, 43: {"inside": 0.0}}
    # Check the arithmetic behind the comment: the class-1 weight really exceeds the class-0 weight.
    sims = train_x @ _on_circle([0.001])[0]
    w = (sims / 0.07).exp()
    assert w[3:].sum() > 3 * w[:3].sum()


def test_negative_labels_are_ignored_on_both_sides() -> None:
    train_x = _on_circle([0.0, 0.01, math.pi, math.pi + 0.01, 0.002])
    train_y = torch.tensor([0, 0, 1, 1, -1])  # the -1 row is the nearest neighbour of the first query
    test_x = _on_circle([0.001, math.pi, 0.0])
    # The last query is predicted 0; were its -1 counted as a label the score would be 2/3.
    out = knn_probe(train_x, train_y, {"t": (test_x, torch.tensor([0, 1, -1]))}, num_classes=2, ks=(1,))
    assert out == {1: {"t": 1.0}}
    # One wrong labelled row out of two labelled rows: 0.5, not 1/3.
    out = knn_probe(train_x, train_y, {"t": (test_x, torch.tensor([1, 1, -1]))}, num_classes=2, ks=(1,))
    assert out == {1: {"t": 0.5}}
    # Only unlabelled queries: nan rather than a crash or a fake 0.
    out = knn_probe(train_x, train_y, {"t": (test_x[2:], torch.tensor([-1]))}, num_classes=2, ks=(1,))
    assert math.isnan(out[1]["t"])


def test_k_larger_than_training_set_is_clipped() -> None:
    # Five training rows, three of class 0; a huge temperature makes the vote a plain count.
    train_x = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    train_y = torch.tensor([0, 1, 0, 1, 0])
    test_x = torch.randn(8, 4, generator=torch.Generator().manual_seed(2))
    test_y = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1])
    out = knn_probe(train_x, train_y, {"t": (test_x, test_y)}, num_classes=2, ks=(5, 200), temperature=1e4)
    assert out == {5: {"t": 3 / 8}, 200: {"t": 3 / 8}}  # everyone is called class 0


def _naive_knn(train_x, train_y, test_x, test_y, num_classes, k, temperature) -> float:
    bank = torch.nn.functional.normalize(train_x, dim=1)
    right = 0
    for x, y in zip(test_x, test_y):
        sims = bank @ (x / x.norm())
        order = sims.argsort(descending=True)[:k]
        votes = [0.0] * num_classes
        for j in order.tolist():
            votes[int(train_y[j])] += math.exp(float(sims[j]) / temperature)
        right += int(max(range(num_classes), key=votes.__getitem__) == int(y))
    return right / len(test_y)


def test_matches_query_by_query_reference_across_chunks() -> None:
    g = torch.Generator().manual_seed(3)
    centres = torch.randn(4, 8, generator=g)
    train_y = torch.randint(0, 4, (120,), generator=g)
    test_y = torch.randint(0, 4, (37,), generator=g)
    train_x = centres[train_y] + 0.8 * torch.randn(120, 8, generator=g)
    test_x = centres[test_y] + 0.8 * torch.randn(37, 8, generator=g)
    out = knn_probe(train_x, train_y, {"t": (test_x, test_y)}, num_classes=4, ks=(1, 5, 20), temperature=0.1, chunk=7)
    for k in (1, 5, 20):
        assert out[k]["t"] == pytest.approx(_naive_knn(train_x, train_y, test_x, test_y, 4, k, 0.1))
    assert 0.3 < out[20]["t"] < 1.0  # a task where k matters: neither trivial nor hopeless
