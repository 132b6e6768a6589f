"""The pointing game against hand-made maps with a known answer, and the word -> token-row lookup."""

from __future__ import annotations

import pytest
import torch

from tcjepa.data.shapes import Grounding
from tcjepa.eval.grounding import (
    WordQuery,
    caption_mean_maps,
    patch_cover,
    patch_word_cosines,
    pointing_game,
    token_row,
)
from tcjepa.models.conditioning import TextInputs

pytestmark = pytest.mark.usefixtures("single_thread")


def test_token_row_finds_the_right_occurrence() -> None:
    caption = "the red circle is left of the red square."
    tokens = ["the", "red", "circle", "is", "left", "of", "the", "red", "square", "."]
    assert token_row(caption, Grounding(1, "red", (0,)), tokens) == 1
    assert token_row(caption, Grounding(7, "red", (1,)), tokens) == 7
    assert token_row(caption, Grounding(8, "square", (1,)), tokens) == 8
    # Word pieces before the word shift the rows; the occurrence count still finds it.
    pieces = ["the", "red", "circ", "##le", "is", "left", "of", "the", "red", "square", "."]
    assert token_row(caption, Grounding(8, "square", (1,)), pieces) == 9
    assert token_row(caption, Grounding(7, "red", (1,)), pieces) == 8
    assert token_row(caption, Grounding(8, "square", (1,)), tokens[:5]) is None  # truncated away


def test_patch_cover_counts_pixel_shares() -> None:
    inst = torch.zeros(1, 4, 4, dtype=torch.long)
    inst[0, :2, :2] = 1  # slot 0 fills the top-left 2x2 patch
    inst[0, 2, 2] = 2  # slot 1 covers a quarter of the bottom-right patch
    cover = patch_cover(inst, patch_size=2)
    assert cover.shape == (1, 4, 4)
    assert cover[0, 0, 0] == 1.0 and cover[0, 3, 1] == 0.25
    assert cover[0, 1].sum() == 0 and cover[0, 2].sum() == 0


def _scene() -> tuple[torch.Tensor, list[WordQuery]]:
    # 4 patches; slot 0 covers patch 0, slot 1 covers patch 3. Word 0 names slot 0, word 1 names slot 1.
    cover = torch.zeros(1, 4, 4)
    cover[0, 0, 0] = 1.0
    cover[0, 3, 1] = 0.5
    queries = [WordQuery(0, 0, 0, "red", (0,)), WordQuery(0, 0, 1, "circle", (1,))]
    return cover, queries


def test_pointing_game_hits_misses_and_chance() -> None:
    cover, queries = _scene()
    right = torch.zeros(1, 4, 1, 2)
    right[0, 0, 0, 0] = 0.9  # word 0 peaks on patch 0 (its object)
    right[0, 3, 0, 1] = -0.1  # word 1: every cosine negative, the top one is still on its object
    right[0, :3, 0, 1] = -0.5
    res = pointing_game(right, queries, cover)
    assert res.accuracy == 1.0 and res.count == 2
    assert res.chance == pytest.approx(0.25)  # one qualifying patch out of four, for both words
    assert res.by_kind == {"colour": (1.0, 0.25, 1), "shape": (1.0, 0.25, 1)}
    wrong = torch.zeros(1, 4, 1, 2)
    wrong[0, 1, 0, :] = 1.0  # both words peak on a background patch
    assert pointing_game(wrong, queries, cover).accuracy == 0.0


def test_word_agnostic_control_separates_grounding_from_saliency() -> None:
    cover, queries = _scene()
    valid = torch.tensor([[[True, True, False]]])  # two real words and one padding slot
    # Word-specific maps: each word peaks on its own object. The caption mean has one peak, on one object.
    specific = torch.zeros(1, 4, 1, 3)
    specific[0, 0, 0, 0], specific[0, 3, 0, 1] = 0.9, 0.6
    specific[0, 1, 0, 2] = 50.0  # padding: must not move the mean
    mean = caption_mean_maps(specific, valid)
    assert mean.shape == specific.shape
    assert torch.allclose(mean[0, :, 0, 0], torch.tensor([0.45, 0.0, 0.0, 0.3]))
    assert pointing_game(specific, queries, cover).accuracy == 1.0
    assert pointing_game(mean, queries, cover).accuracy == 0.5  # only the word whose object is salient
    # A saliency map (the same for every word) scores the same with and without the word.
    salient = torch.zeros(1, 4, 1, 3)
    salient[0, 0, 0, :2] = 1.0
    assert (
        pointing_game(salient, queries, cover).accuracy
        == pointing_game(caption_mean_maps(salient, valid), queries, cover).accuracy
        == 0.5
    )


def test_pointing_game_needs_min_cover() -> None:
    cover, queries = _scene()
    maps = torch.zeros(1, 4, 1, 2)
    maps[0, 3, 0, 1] = 1.0
    assert pointing_game(maps, queries[1:], cover, min_cover=0.5).accuracy == 1.0
    res = pointing_game(maps, queries[1:], cover, min_cover=0.6)  # the object fills too little of any patch
    assert res.count == 0 and res.accuracy != res.accuracy  # nan: nothing fair to score


def test_patch_word_cosines_reads_every_patch(tiny_cfg) -> None:
    from tcjepa.methods import build_method

    torch.manual_seed(0)
    method = build_method(tiny_cfg(), text_dim=8).eval()
    images = torch.rand(2, 3, 32, 32)
    text = TextInputs(torch.randn(2, 3, 5, 8), torch.ones(2, 3, 5, dtype=torch.bool), torch.ones(2, 3, dtype=bool))
    cos = patch_word_cosines(method, images, text)
    assert cos.shape == (2, 64, 3, 5)
    assert cos.abs().max() <= 1.0 + 1e-5
    # Each image's maps depend on that image's patches only.
    images2 = images.clone()
    images2[1] = torch.rand(3, 32, 32)
    cos2 = patch_word_cosines(method, images2, text)
    torch.testing.assert_close(cos2[0], cos[0])
    assert not torch.allclose(cos2[1], cos[1])
    with pytest.raises(ValueError, match="no patch-word links"):
        patch_word_cosines(build_method(tiny_cfg("method=ijepa")).eval(), images, text)


def test_patch_word_cosines_can_read_either_similarity(tiny_cfg) -> None:
    from tcjepa.methods import build_method

    torch.manual_seed(0)
    method = build_method(tiny_cfg(), text_dim=8).eval()  # trained (here: built) with raw cosines
    images = torch.rand(2, 3, 32, 32)
    text = TextInputs(torch.randn(2, 2, 4, 8), torch.ones(2, 2, 4, dtype=torch.bool), torch.ones(2, 2, dtype=bool))
    own = patch_word_cosines(method, images, text)
    raw = patch_word_cosines(method, images, text, centred=False)
    centred = patch_word_cosines(method, images, text, centred=True)
    torch.testing.assert_close(own, raw)
    assert not torch.allclose(centred, raw)
    assert all(not b.cond.centred_links for b in method.predictor.blocks)  # the flag is restored
