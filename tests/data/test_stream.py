"""The stream's batches depend on (seed, step, global sample index) only: not on ranks, workers or resumes.

Scale-out (DDP, FSDP) is checked against the one-process run on the same global batch, which needs these
to hold exactly: the ranks' batches of a step, concatenated, equal the world-size-1 batch (images, masks,
captions, word states, validity masks), for either mask collation; the loader's worker count changes
nothing; a resumed stream gives the straight run's batch; and a sample's image, crop and captions do not
depend on which other samples share its batch.
"""

from __future__ import annotations

import pytest
import torch

from tcjepa.config import load_config
from tcjepa.data.batch import assemble_batch, concat_batches, mask_sampler_for, text_spec
from tcjepa.data.keys import BatchKeys
from tcjepa.data.sources import build_dataset
from tcjepa.data.stream import PretrainStream, pretrain_loader

TENSORS = ("images", "mask_context", "mask_targets", "mask_context_valid", "text", "text_mask", "caption_mask")
COUNTS = ("crop_fallback_images", "captions_captionless", "captions_dropped")  # per-rank counts: ranks sum


def _cfg(*overrides: str):
    # A crop and fewer captions than a scene has, so that both draws matter; 8 samples split 2 or 4 ways.
    return load_config(
        "tiny",
        ["train.batch_size=8", "train.steps=6", "data.crop_scale=[0.4,1.0]", "text.num_captions=3", *overrides],
    )


def _stream(cfg, rank: int = 0, world: int = 1) -> PretrainStream:
    return PretrainStream(cfg, text_spec(cfg), rank=rank, world_size=world)


def _concat(parts: list[dict]) -> dict:
    out = concat_batches(parts)
    out["stats"] = {k: sum(p["stats"][k] for p in parts) for k in COUNTS}
    return out


def assert_same_batch(got: dict, want: dict) -> None:
    assert {k for k in TENSORS if k in got} == {k for k in TENSORS if k in want}
    for k in TENSORS:
        if k in want:
            assert got[k].shape == want[k].shape, k
            assert torch.equal(got[k], want[k]), k
    assert got["captions"] == want["captions"]


@pytest.mark.parametrize("truncate", ["min", "pad"])
@pytest.mark.parametrize("world", [2, 4])
def test_ranks_concatenated_equal_the_single_process_batch(truncate: str, world: int) -> None:
    cfg = _cfg(f"mask.truncate={truncate}")
    single = _stream(cfg)
    ranks = [_stream(cfg, r, world) for r in range(world)]
    for step in (0, 3):
        want = single[step]
        parts = [s[step] for s in ranks]
        assert all(p["images"].shape[0] == 8 // world for p in parts)
        got = _concat(parts)
        assert_same_batch(got, want)
        assert got["stats"] == {k: want["stats"][k] for k in COUNTS}
        # The mask counters describe the global batch: every rank reports the one-process value.
        assert all(p["stats"]["mask_context_kept"] == want["stats"]["mask_context_kept"] for p in parts)
    assert "mask_context_valid" in want if truncate == "pad" else "mask_context_valid" not in want


def test_masks_differ_between_samples_and_steps() -> None:
    """The equality above is not won by drawing one mask for everyone."""
    s = _stream(_cfg("mask.truncate=pad"))
    a, b = s[0], s[1]
    assert len({tuple(row.tolist()) for row in a["mask_targets"].flatten(1)}) > 1
    assert not torch.equal(a["mask_targets"], b["mask_targets"])


def _strip(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k != "stats"}


def test_loader_gives_the_same_batches_with_0_and_2_workers() -> None:
    cfg = _cfg()
    straight = list(pretrain_loader(_stream(cfg), 0, num_workers=0))
    workers = list(pretrain_loader(_stream(cfg), 0, num_workers=2))
    assert [b["step"] for b in workers] == list(range(6)) == [b["step"] for b in straight]
    for got, want in zip(workers, straight):
        assert_same_batch(got, want)


def test_resumed_stream_gives_the_straight_runs_batches() -> None:
    cfg = _cfg()
    straight = list(pretrain_loader(_stream(cfg), 0, num_workers=0))
    resumed = list(pretrain_loader(_stream(cfg), 4, num_workers=0))  # a fresh stream, as after a restart
    assert [b["step"] for b in resumed] == [4, 5]
    for got, want in zip(resumed, straight[4:]):
        assert_same_batch(got, want)


def test_a_samples_image_crop_and_captions_do_not_depend_on_its_batch() -> None:
    """Sample i of step s, assembled alone, inside any slice, or in the whole batch: the same draws."""
    cfg = _cfg()
    spec, masks, ds = text_spec(cfg), mask_sampler_for(cfg), build_dataset(cfg)
    stream = _stream(cfg)
    step, whole = 2, stream[2]
    samples = [ds[i] for i in stream.indices(step)]
    cache = stream.cache
    for first, n in ((5, 1), (2, 3), (4, 4)):
        keys = BatchKeys(cfg.seed, step, first, 8)
        part = assemble_batch(samples[first : first + n], cfg, spec, masks, keys, cache)
        assert torch.equal(part["images"], whole["images"][first : first + n])
        assert part["captions"] == whole["captions"][first : first + n]
        assert torch.equal(part["mask_targets"], whole["mask_targets"][first : first + n])
    # The crop really is drawn per sample: the same scene at another position is cropped differently.
    moved = assemble_batch(samples[5:6], cfg, spec, masks, BatchKeys(cfg.seed, step, 6, 8), cache)
    assert not torch.equal(moved["images"][0], whole["images"][5])
