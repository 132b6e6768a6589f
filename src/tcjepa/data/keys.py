"""Where the data's randomness comes from: generators keyed by position, never by process.

Scale-out needs the batch of a step to be the same whatever the number of ranks and workers, so that a
2-rank step can be checked against the 1-rank step on the same global batch. So no draw depends on which
process makes it or on how many samples it makes:

* per sample: the crop and the caption sampling of global sample ``i`` of step ``s`` draw from their own
  generator, seeded from ``SeedSequence([seed, s, stream, i])`` (~12 us per generator on a laptop core,
  under 2% of assembling a 64-image batch; a counter-based hash would be cheaper but is not needed);
* per step: the masks of the whole global batch (block sizes once per step, then every placement) come
  from one generator keyed by ``(seed, s, stream)``; every rank draws all of them (index tensors are cheap)
  and keeps its own rows, so truncation to the smallest context uses the global batch's minimum.

The image index is keyed by global position too (``PretrainStream.indices``: seeded epoch permutations).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# Stream ids keep the draws of different kinds apart; the held-out batch uses its own three.
STREAM_IMAGES, STREAM_CAPTIONS, STREAM_MASKS = 1, 2, 3
HELDOUT_STREAMS = (100, 101, 102)


def _generator(entropy: list[int]) -> torch.Generator:
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def step_generator(seed: int, step: int, stream: int) -> torch.Generator:
    """One generator per (seed, step, stream): draws shared by the whole global batch of a step."""
    return _generator([seed, step, stream])


def sample_generator(seed: int, step: int, stream: int, index: int) -> torch.Generator:
    """One generator per global sample: its draws do not depend on how the batch is split."""
    return _generator([seed, step, stream, index])


@dataclass(frozen=True)
class BatchKeys:
    """The keys of one (possibly partial) batch: rows ``first .. first + n`` of a step's global batch."""

    seed: int
    step: int
    first: int  # global index of this batch's first sample
    global_batch: int  # samples in the step's whole batch, across ranks
    streams: tuple[int, int, int] = (STREAM_IMAGES, STREAM_CAPTIONS, STREAM_MASKS)

    def crop(self, k: int) -> torch.Generator:
        """The crop generator of this batch's ``k``-th sample."""
        return sample_generator(self.seed, self.step, self.streams[0], self.first + k)

    def captions(self, k: int) -> torch.Generator:
        """The caption-sampling generator of this batch's ``k``-th sample."""
        return sample_generator(self.seed, self.step, self.streams[1], self.first + k)

    def masks(self) -> torch.Generator:
        """The generator of the whole global batch's masks."""
        return step_generator(self.seed, self.step, self.streams[2])
