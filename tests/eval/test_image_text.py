"""Retrieval and zero-shot for methods with an image-text space; n/a (absent keys) for the others."""

from __future__ import annotations

import json

import pytest
import torch

from tcjepa.app.runs import eval_target
from tcjepa.eval.image_text import random_recall_at, recall_at
from tcjepa.eval.markdown import eval_markdown
from tcjepa.eval.suite import NO_TEXT_SPACE, Suite, run_eval
from tcjepa.train.loop import pretrain

pytestmark = pytest.mark.usefixtures("single_thread")

SMALL = Suite("small", shapes={"train": 48, "val": 24, "test": 40, "heldout": 24}, fashion={}, knn_ks=(5,), dense=False)
KEYS = [f"retrieval/{d}/r{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)] + ["zeroshot/colour", "zeroshot/shape"]


def test_recall_counts_any_item_with_the_same_sentence() -> None:
    sims = torch.tensor([[0.1, 0.9, 0.0], [0.9, 0.1, 0.0], [0.0, 0.2, 0.8]])
    same = torch.eye(3, dtype=torch.bool)
    assert recall_at(sims, same, 1) == pytest.approx(1 / 3)  # only row 2 ranks its own item first
    same[0, 1] = same[1, 0] = True  # items 0 and 1 share a sentence: rows 0 and 1 hit too
    assert recall_at(sims, same, 1) == 1.0
    assert recall_at(sims, torch.eye(3, dtype=torch.bool), 2) == pytest.approx(1.0)


def test_random_recall_is_the_exact_hit_rate_of_a_random_ranking() -> None:
    assert random_recall_at(torch.tensor([1, 1, 1, 1]), 4, 1) == pytest.approx(0.25)
    assert random_recall_at(torch.tensor([2]), 4, 2) == pytest.approx(1 - 1 / 6)  # miss: both picks from 2 of 4
    assert random_recall_at(torch.tensor([1]), 4, 10) == 1.0
    g = torch.Generator().manual_seed(0)
    trials = [bool(torch.randperm(10, generator=g)[:3].lt(2).any()) for _ in range(4000)]
    assert random_recall_at(torch.tensor([2]), 10, 3) == pytest.approx(sum(trials) / len(trials), abs=0.03)


@pytest.mark.parametrize("method", ["clip", "siglip"])
def test_a_contrastive_run_gets_retrieval_and_zero_shot_with_chance(tiny_cfg, tmp_path, method) -> None:
    cfg = tiny_cfg(f"method={method}", "train.steps=3", "train.batch_size=8", "train.monitor_every=0")
    run_dir = pretrain(cfg, progress=False)
    result = run_eval(eval_target(run_dir), SMALL, out=tmp_path / "eval", progress=False)
    m = result["metrics"]
    for key in KEYS:
        assert 0.0 <= m[key] <= 1.0 and 0.0 < m[f"chance/{key}"] <= 1.0, key
    assert m["chance/retrieval/i2t/r10"] >= m["chance/retrieval/i2t/r1"]
    assert result["settings"]["image_text"] != NO_TEXT_SPACE
    md = (tmp_path / "eval" / "eval.md").read_text()
    assert "| retrieval/i2t/r1 |" in md and "n/a" not in md.split("## Image-text")[1]


def test_an_encoder_without_a_text_space_says_not_applicable(tmp_path) -> None:
    result = {
        "metrics": {"scene/colour/test": 0.5},
        "settings": {
            "target": "ijepa",
            "suite": {"name": "small", "tasks": [], "knn_ks": [5]},
            "features": "average-pooled last layer",
            "image_size": 32,
            "seconds": 1.0,
            "machine": "test",
            "image_text": NO_TEXT_SPACE,
        },
    }
    md = eval_markdown(result).split("## Image-text")[1]
    assert all(f"| {key} | n/a | n/a |" in md for key in KEYS)
    assert "no text space" in md
    json.dumps(result)


def test_jepa_eval_json_has_no_image_text_keys(tiny_cfg, tmp_path) -> None:
    cfg = tiny_cfg("method=ijepa", "train.steps=2", "train.batch_size=8", "train.monitor_every=0")
    result = run_eval(eval_target(pretrain(cfg, progress=False)), SMALL, progress=False)
    assert not any(
        k.startswith(("retrieval/", "zeroshot/", "chance/retrieval/", "chance/zeroshot/")) for k in result["metrics"]
    )
    assert result["settings"]["image_text"] == NO_TEXT_SPACE
