"""Batch assembly builds the fields a method's BatchSpec asks for, and only those."""

from __future__ import annotations

import pytest

from tcjepa.config import load_config
from tcjepa.data.batch import BatchSpec, text_spec
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
