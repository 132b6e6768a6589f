"""Batch assembly builds the fields a method's BatchSpec asks for, and only those."""

from __future__ import annotations

import pytest
import torch

from tcjepa.config import load_config
from tcjepa.data.batch import BatchSpec, concat_batches, text_spec
from tcjepa.data.stream import PretrainStream
from tcjepa.methods.base import BatchSpec as ReExported

MASK_KEYS = {"mask_context", "mask_targets"}
TEXT_KEYS = {"captions", "text", "text_mask", "caption_mask"}


def _cfg(*overrides: str):
    return load_config("tiny", ["train.batch_size=4", *overrides])


def test_methods_base_re_exports_the_spec_of_the_data_layer() -> None:
    assert ReExported is BatchSpec


@pytest.mark.parametrize(
    ("spec", "masks", "text"),
    [(BatchSpec(), True, False), (BatchSpec(masks=False), False, False), (None, True, True)],
)
def test_fields_follow_the_spec(spec, masks: bool, text: bool) -> None:
    cfg = _cfg("mask.truncate=pad")
    batch = PretrainStream(cfg, spec or text_spec(cfg))[0]
    assert batch["images"].shape[0] == 4
    keys = set(batch)
    assert bool(keys & (MASK_KEYS | {"mask_context_valid"})) == masks
    assert keys.issuperset(MASK_KEYS | {"mask_context_valid"}) == masks
    assert ("mask_context_kept" in batch["stats"]) == masks
    assert bool(keys & TEXT_KEYS) == text
    assert keys.issuperset(TEXT_KEYS) == text
    if text:
        assert batch["caption_mask"].shape == (4, cfg.text.num_captions)


def test_token_ids_are_refused_until_assembly_builds_them() -> None:
    with pytest.raises(ValueError, match="text='tokens'"):
        PretrainStream(_cfg(), BatchSpec(text="tokens", captions=2))[0]


def test_concat_pads_the_word_axis_to_the_widest_part() -> None:
    narrow = {
        "images": torch.zeros(1, 3, 2, 2),
        "text": torch.ones(1, 2, 3, 4),
        "text_mask": torch.ones(1, 2, 3).bool(),
    }
    wide = {"images": torch.ones(2, 3, 2, 2), "text": torch.ones(2, 2, 5, 4), "text_mask": torch.ones(2, 2, 5).bool()}
    out = concat_batches([narrow, wide])
    assert out["images"].shape[0] == 3 and out["text"].shape == (3, 2, 5, 4)
    assert out["text"][0, :, 3:].abs().sum() == 0 and not out["text_mask"][0, :, 3:].any()
    assert out["text_mask"][0, :, :3].all() and out["text_mask"][1:].all()
