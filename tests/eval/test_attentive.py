"""Attentive probe: it finds a label hidden in one patch that average pooling washes out, deterministically."""

from __future__ import annotations

import pytest
import torch

from tcjepa.eval.attentive import AttentivePooler, attentive_probe
from tcjepa.eval.linear import linear_probe

pytestmark = pytest.mark.usefixtures("single_thread")

CLASSES, PATCHES, DIM = 4, 16, 32


def _hidden_patch_task(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every patch shows one of the class prototypes at random; one patch, at a random position, also
    carries a marker, and its prototype is the label. The mean of all patches holds the label's prototype
    once among 15 random ones, so pooling leaves little signal; attending to the marker recovers it all."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.zeros(CLASSES, DIM)
    protos[torch.arange(CLASSES), torch.arange(CLASSES)] = 2.0
    kinds = torch.randint(0, CLASSES, (n, PATCHES), generator=g)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    where = torch.randint(0, PATCHES, (n,), generator=g)
    kinds[torch.arange(n), where] = y
    x = protos[kinds] + 0.3 * torch.randn(n, PATCHES, DIM, generator=g)
    x[torch.arange(n), where, CLASSES] += 3.0  # the marker: a dimension no prototype uses
    return x.half(), y  # fp16, as extract_features stores patches


def test_attentive_probe_finds_the_one_patch_that_pooling_loses() -> None:
    train_x, train_y = _hidden_patch_task(1024, seed=0)
    val_x, val_y = _hidden_patch_task(256, seed=1)
    test_x, test_y = _hidden_patch_task(256, seed=2)
    train_y[::4] = -1  # unlabelled rows: cross-entropy would raise on -1 if they reached training
    test_y[::2] = -1
    res = attentive_probe(
        train_x, train_y, val_x, val_y, {"test": (test_x, test_y)}, CLASSES, lrs=(3e-3, 1e-2), epochs=10, batch_size=64
    )
    assert len(res.grid_val_acc) == 2 and res.wd == 0.05
    assert res.lr == 1e-2 and res.val_acc == max(res.grid_val_acc)  # 3e-3 has not found the marker in 10 epochs
    assert res.val_acc > 0.9 and res.test_acc["test"] > 0.9
    pooled = linear_probe(
        train_x.float().mean(1), train_y, val_x.float().mean(1), val_y, {"test": (test_x.float().mean(1), test_y)}, 4
    )
    assert pooled.test_acc["test"] < 0.6  # chance is 0.25; the pooled mean keeps only a weak trace


def test_attentive_probe_is_deterministic_and_leaves_global_rng_alone() -> None:
    x, y = _hidden_patch_task(64, seed=3)
    args = (x, y, x[:32], y[:32], {"a": (x[32:], y[32:])}, CLASSES)
    kwargs = dict(lrs=(1e-3, 1e-2), epochs=2, batch_size=16, queries=2)
    rng_before = torch.get_rng_state()
    first = attentive_probe(*args, **kwargs)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert attentive_probe(*args, **kwargs) == first
    # The same numbers in float32 give the same result: inputs are cast to float32 per batch either way.
    assert attentive_probe(x.float(), *args[1:], **kwargs) == first
    assert attentive_probe(*args, **{**kwargs, "seed": 1}) != first


def test_unlabelled_validation_and_bad_head_count() -> None:
    x, y = _hidden_patch_task(32, seed=4)
    res = attentive_probe(x, y, x, torch.full_like(y, -1), {}, CLASSES, lrs=(1e-3, 1e-2), epochs=1, batch_size=16)
    assert res.lr == 1e-3 and all(a != a for a in res.grid_val_acc)  # nan everywhere: the first lr is kept
    with pytest.raises(ValueError, match="divisible"):
        AttentivePooler(DIM, CLASSES, heads=5)
    with pytest.raises(ValueError, match="no labelled"):
        attentive_probe(x, torch.full_like(y, -1), x, y, {}, CLASSES, epochs=1)
