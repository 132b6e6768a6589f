"""`fashion-scenes`: items from the right Fashion-MNIST splits, held-out class pairs, exact maps and captions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tcjepa.config import load_config
from tcjepa.data.fashion import ENV_VAR, FashionMNIST
from tcjepa.data.fashion_scenes import (
    CAPTIONS_PER_SCENE,
    CLASS_WORDS,
    HELD_OUT_PAIRS,
    ITEM_POOL_SEED,
    MIN_VISIBLE,
    FashionScenes,
)
from tcjepa.data.shapes_captions import Grounding
from tcjepa.data.sources import build_dataset, scene_dataset
from tcjepa.eval.grounding import token_row

from .test_fashion import write_set

N_TRAIN, N_TEST = 5300, 200  # more than the probe's 5000-image val slice, so every split has items


def garments(n: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """n 28x28 'garments': a bright block whose size depends on the class, on black; labels k % 10."""
    labels = ((np.arange(n) + offset) % 10).astype(np.uint8)
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    for k, c in enumerate(labels):
        h, w = 8 + int(c), 18 - int(c)
        images[k, 14 - h // 2 : 14 - h // 2 + h, 14 - w // 2 : 14 - w // 2 + w] = 120 + (k % 100)
    return images, labels


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fashion")
    write_set(folder, "train", *garments(N_TRAIN, 0))
    write_set(folder, "test", *garments(N_TEST, 3))
    return folder


def scenes(root: Path, split: str, n: int = 40, **kw) -> FashionScenes:
    return FashionScenes(split, image_size=48, seed=kw.pop("seed", 0), size=n, root=str(root), **kw)


def has_heldout_pair(labels: list[int]) -> bool:
    return any({a, b} == set(p) for p in HELD_OUT_PAIRS for a in labels for b in labels)


def test_scenes_are_a_pure_function_of_seed_split_and_index(root: Path) -> None:
    a, b = scenes(root, "train")[7], scenes(root, "train")[7]
    assert torch.equal(a["image"], b["image"]) and a["captions"] == b["captions"]
    assert not torch.equal(a["image"], scenes(root, "train", seed=1)[7]["image"])
    assert a["image"].shape == (3, 48, 48) and a["image"].dtype == torch.float32
    assert a["image"].min() >= 0.0 and a["image"].max() <= 1.0


def test_items_come_from_the_probe_split_of_their_scene_split(root: Path) -> None:
    """Train scenes never show a probe val or test image; val scenes show only val images; test/heldout test ones."""
    for split, pool_split in (("train", "train"), ("val", "val"), ("test", "test"), ("heldout", "test")):
        ds = scenes(root, split, n=30)
        pool = FashionMNIST(pool_split, image_size=28, root=root, seed=ITEM_POOL_SEED)
        for i in range(len(ds)):
            for item in ds.scene(i).items:
                assert pool.targets[item.source] == item.label
        assert ds.pool.split == pool_split
    train_rows = set(FashionMNIST("train", root=root, seed=ITEM_POOL_SEED).source_index.tolist())
    val_rows = set(FashionMNIST("val", root=root, seed=ITEM_POOL_SEED).source_index.tolist())
    assert not train_rows & val_rows


def test_held_out_pairs_only_and_always_in_the_heldout_split(root: Path) -> None:
    for split in ("train", "val", "test"):
        ds = scenes(root, split, n=60, min_objects=3)
        assert not any(has_heldout_pair([it.label for it in ds.scene(i).items]) for i in range(len(ds)))
    held = scenes(root, "heldout", n=60)
    for i in range(len(held)):
        scene = held.scene(i)
        labels = [it.label for it in scene.items]
        assert has_heldout_pair(labels) and len(set(labels)) == len(labels)
        slot = scene.heldout_slot
        assert slot >= 0 and any({labels[slot], b} in map(set, HELD_OUT_PAIRS) for b in labels)
        assert all(not any({labels[k], b} in map(set, HELD_OUT_PAIRS) for b in labels) for k in range(slot))


def test_labels_and_maps_agree_with_the_scene(root: Path) -> None:
    ds = scenes(root, "train", n=30)
    for i in range(len(ds)):
        scene, item = ds.scene(i), ds[i]
        lab, n = item["labels"], scene.n_objects
        assert 2 <= n <= 4 and int(lab["count"]) == n - 1
        assert lab["class"][:n].tolist() == [it.label for it in scene.items] and (lab["class"][n:] == -1).all()
        counts = torch.bincount(lab["instance"].flatten(), minlength=5)
        assert counts[1 : n + 1].tolist() == list(scene.visible_area)  # slots: largest visible first
        assert list(scene.visible_area) == sorted(scene.visible_area, reverse=True)
        expected = torch.tensor([0] + [1 + it.label for it in scene.items])[lab["instance"]]
        assert torch.equal(lab["seg_class"], expected)
        image, instance = ds.render(scene)
        assert np.array_equal(instance, lab["instance"].numpy())
        assert np.allclose(image.transpose(2, 0, 1) / 255, item["image"].numpy(), atol=0.5 / 255 + 1e-6)


def test_every_item_stays_mostly_visible(root: Path) -> None:
    ds = scenes(root, "train", n=40, min_objects=4)
    for i in range(len(ds)):
        scene = ds.scene(i)
        for item, seen in zip(scene.items, scene.visible_area):
            _, alpha = ds._alpha(item.source, item.side)
            assert seen >= MIN_VISIBLE * int((alpha >= 0.5).sum())


def test_captions_name_each_item_by_its_class_word_at_the_grounded_index(root: Path) -> None:
    ds = scenes(root, "train", n=40, min_objects=1)
    for i in range(len(ds)):
        scene = ds.scene(i)
        assert len(scene.captions) == CAPTIONS_PER_SCENE == len(set(scene.captions))
        for caption, groundings in zip(scene.captions, scene.groundings):
            words = caption.rstrip(".").split(" ")
            for g in groundings:
                assert words[g.word_index].strip(",") == g.word
                assert {CLASS_WORDS[scene.items[s].label] for s in g.slots} == {g.word}
        count = scene.captions[0]
        assert count.startswith("there is one item" if scene.n_objects == 1 else "there are")
        assert "a trousers" not in " ".join(scene.captions)  # plural garment: "a pair of trousers"


def test_token_row_finds_words_split_into_pieces() -> None:
    tokens = ["[CLS]", "the", "sand", "##al", "is", "left", "of", "the", "sand", "##al", "."]
    caption = "the sandal is left of the sandal."
    assert token_row(caption, Grounding(1, "sandal", (0,)), tokens) == 2
    assert token_row(caption, Grounding(6, "sandal", (1,)), tokens) == 8
    assert token_row("the bag.", Grounding(1, "bag", (0,)), ["the", "bag", "."]) == 1


def test_registered_source_and_scene_dataset(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, str(root))
    cfg = load_config("tiny", ["data.name=fashion-scenes", "data.train_size=9", "data.min_objects=2"])
    ds = build_dataset(cfg)
    assert isinstance(ds, FashionScenes) and len(ds) == 9 and ds.image_size == cfg.data.image_size
    assert isinstance(scene_dataset("fashion-scenes", "test", 32, 5, 0), FashionScenes)
    assert not isinstance(scene_dataset("shapes", "test", 32, 5, 0), FashionScenes)


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path: Path) -> None:
    ds = FashionScenes("train", image_size=32, size=3, root=str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        ds[0]


def test_heldout_split_needs_room_for_a_pair(root: Path) -> None:
    with pytest.raises(ValueError, match="max_objects >= 2"):
        FashionScenes("heldout", min_objects=1, max_objects=1, root=str(root))


def test_cli_previews_fashion_scenes(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tcjepa.app.cli import main

    monkeypatch.setenv(ENV_VAR, str(root))
    out = tmp_path / "p.png"
    assert (
        main(["data", "preview", "--name", "fashion-scenes", "--n", "2", "--image-size", "32", "--out", str(out)]) == 0
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
