"""I-JEPA multi-block masks: one context block and M target blocks per image, on a grid of patches.

Per batch, one target block size and one square context block size are drawn, so every image of the
batch predicts the same number of target patches and the predictor sees equal-length sequences. With
``draw="reference"`` (the default) sizes are drawn as the published I-JEPA sampler draws them: one uniform
number sets both the target scale and its aspect (a larger block is also a taller one), and the context
side is capped at the grid side minus one, so on an 8x8 grid the context block is always 7x7.
``draw="independent"`` is this project's first reading: scale and aspect drawn independently, and a
context block that may cover the whole grid (on 8x8 it did in 81% of batches, ~40% more context). Per image, the
M target blocks and the context block are placed uniformly at random (targets may overlap each other),
and every target patch is removed from the context so the encoder never sees what it must predict.
A context with fewer than ``min_keep`` patches is rejected and the positions redrawn.

Three things differ on purpose from the published reference sampler, because each one silently breaks
small-grid runs or biases what the model learns:

* Termination. ``min_keep`` is checked against the grid at construction. Where the largest target blocks
  would leave fewer than half of random placements with ``min_keep`` context patches, or the grid (or the
  square context block clipped to it) holds fewer than ``min_keep`` patches, it is lowered, with a logged
  notice, to a value that keeps rejection sampling fast. Where the config contradicts itself (the grid
  holds ``min_keep`` patches but ``context_scale`` asks for fewer), a ValueError names the key. Redraws are
  bounded (``max_rounds``); after that a deterministic fallback placement, checked at construction to keep
  ``min_keep`` patches, is used.
* Positions. Top-left corners are drawn from ``[0, H - h]`` and ``[0, W - w]`` inclusive, so a block may
  touch the far border; with an exclusive bound a 7x7 context on an 8x8 grid would always sit at (0, 0)
  and the last row and column would never be context.
* Collation. Contexts are cut to the smallest one in the batch by dropping a random subset (kept sorted),
  not the last indices in raster order, which would systematically hide the bottom rows from the encoder.

``truncate="pad"`` avoids the cut altogether: truncation drops about a third of each context on an 8x8 grid
at batch 64, turning the context block into a block with random holes. Every context is kept whole and
padded to the batch's largest with copies of its first index; ``MaskBatch.context_valid`` marks the real
slots, and the encoder and predictor mask the padding out of attention. ``"min"`` (the default) cuts.

Randomness comes only from the ``torch.Generator`` passed to the call, so a batch of masks is a
deterministic function of that generator's state (and the data loader can seed it per step).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch

logger = logging.getLogger("tcjepa.masks")

# min_keep is lowered until at least this share of random placements is accepted at the least favourable
# block sizes. With 0.5, ``max_rounds`` = 64 redraws leave ~1e-17 chance per image of needing the fallback.
_ACCEPT_SHARE = 0.5
# Placements simulated per candidate block size when calibrating min_keep at construction. A private
# generator with a fixed seed keeps the calibration (and so the effective min_keep) reproducible and leaves
# every caller's random stream untouched.
_CALIBRATION_DRAWS = 2048
_CALIBRATION_SEED = 0


@dataclass(frozen=True)
class MaskConfig:
    """The I-JEPA multi-block settings (same names and defaults as the ``mask.*`` config section)."""

    context_scale: tuple[float, float] = (0.85, 1.0)  # share of the grid covered by the context block
    target_scale: tuple[float, float] = (0.15, 0.2)  # share of the grid covered by each target block
    target_aspect: tuple[float, float] = (0.75, 1.5)  # height / width of the target blocks
    num_targets: int = 4
    min_keep: int = 10  # fewest context patches an image may keep after the targets are removed
    draw: str = "reference"  # reference|independent block-size draws (module docstring)
    truncate: str = "min"  # min|pad: cut contexts to the batch's smallest, or pad to its largest


DRAWS = ("reference", "independent")
TRUNCATES = ("min", "pad")


@dataclass
class MaskBatch:
    """Equal-length patch index tensors for one batch (raster order: index = row * W + col)."""

    context: torch.Tensor  # (B, Kc) long, sorted, raster patch indices in [0, H*W)
    targets: torch.Tensor  # (B, M, Kt) long, sorted within each block
    # What the sampler had to do to this batch, for metrics.jsonl: a silent fallback is a hidden bias.
    stats: dict[str, float] = field(default_factory=dict)
    # (B, Kc) bool, True for real context slots; None when every slot is real (truncate="min").
    context_valid: torch.Tensor | None = None

    def to(self, device: torch.device | str, non_blocking: bool = False) -> MaskBatch:
        """Move the index tensors (and the validity mask), e.g. after sampling on the CPU in a data-loader worker."""
        valid = self.context_valid
        return MaskBatch(
            context=self.context.to(device, non_blocking=non_blocking),
            targets=self.targets.to(device, non_blocking=non_blocking),
            stats=dict(self.stats),
            context_valid=None if valid is None else valid.to(device, non_blocking=non_blocking),
        )


def _block_masks(top: torch.Tensor, left: torch.Tensor, hw: tuple[int, int], grid: tuple[int, int]) -> torch.Tensor:
    """Boolean (..., H, W) masks of h x w rectangles with the given top-left corners (any leading shape)."""
    (h, w), (height, width) = hw, grid
    rows = torch.arange(height)
    cols = torch.arange(width)
    in_rows = (rows >= top[..., None]) & (rows < top[..., None] + h)
    in_cols = (cols >= left[..., None]) & (cols < left[..., None] + w)
    return in_rows[..., :, None] & in_cols[..., None, :]


def truncate_to_smallest(masks: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Turn (B, N) boolean masks into a (B, K) index tensor, K = the smallest mask's size.

    Each row keeps a uniformly random K-subset of its patches, returned sorted. Dropping a random subset,
    rather than the last indices in raster order, keeps the bottom rows as likely to be context as the top.
    """
    if masks.dim() != 2 or masks.dtype != torch.bool:
        raise ValueError(f"masks must be (batch, patches) bool, got {masks.dtype} {tuple(masks.shape)}")
    keep = int(masks.sum(1).min()) if masks.shape[0] else 0
    if keep == 0:
        raise ValueError("every mask must hold at least one patch; got an empty mask (or an empty batch)")
    # Random scores for the patches in the mask, 2.0 (above any uniform draw) for the others: the K lowest
    # scores are then a uniform K-subset of the mask.
    scores = torch.rand(masks.shape, generator=generator).masked_fill(~masks, 2.0)
    chosen = scores.topk(keep, dim=1, largest=False, sorted=False).indices
    return chosen.sort(dim=1).values


def pad_to_largest(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn (B, N) boolean masks into (B, K) indices and a (B, K) validity mask, K = the largest mask's size.

    Each row holds all its patches, sorted, then copies of its first patch: a padded slot is still a valid
    index for gathers, and the validity mask keeps it out of attention.
    """
    if masks.dim() != 2 or masks.dtype != torch.bool:
        raise ValueError(f"masks must be (batch, patches) bool, got {masks.dtype} {tuple(masks.shape)}")
    counts = masks.sum(1)
    if masks.shape[0] == 0 or int(counts.min()) == 0:
        raise ValueError("every mask must hold at least one patch; got an empty mask (or an empty batch)")
    keep = int(counts.max())
    # A stable sort on "not in the mask" puts each row's patches first, in raster order.
    order = (~masks).to(torch.uint8).argsort(dim=1, stable=True)[:, :keep]
    valid = torch.arange(keep) < counts[:, None]
    return torch.where(valid, order, order[:, :1]), valid


def _check_grid(grid: int | tuple[int, int]) -> tuple[int, int]:
    """Normalise ``grid`` to (H, W); both sides need >= 2 patches so a target can be smaller than the grid."""
    pair = (grid, grid) if isinstance(grid, int) else tuple(grid) if isinstance(grid, tuple | list) else ()
    if len(pair) != 2 or not all(isinstance(v, int) and v >= 2 for v in pair):
        raise ValueError(
            f"grid must be an int or (height, width) of ints >= 2 (patches per side, i.e. data.image_size "
            f"// model.encoder.patch_size), got {grid!r}; use larger images or smaller patches"
        )
    return pair[0], pair[1]


def _check_range(key: str, pair: tuple[float, float], upper: float | None) -> None:
    """Require 0 < low <= high (<= upper), naming the config key, so a bad range fails before training."""
    ok = len(pair) == 2 and all(isinstance(v, int | float) and math.isfinite(v) for v in pair)
    ok = ok and 0 < pair[0] <= pair[1] and (upper is None or pair[1] <= upper)
    if not ok:
        bound = f" <= {upper}" if upper is not None else ""
        raise ValueError(f"config key '{key}' must be a pair with 0 < low <= high{bound}, got {pair!r}")


def _check_config(cfg: MaskConfig) -> None:
    """Validate the ranges and counts of a MaskConfig, naming the offending ``mask.*`` key."""
    _check_range("mask.context_scale", cfg.context_scale, 1.0)
    _check_range("mask.target_scale", cfg.target_scale, 1.0)
    _check_range("mask.target_aspect", cfg.target_aspect, None)
    if not isinstance(cfg.num_targets, int) or cfg.num_targets < 1:
        raise ValueError(f"config key 'mask.num_targets' must be an int >= 1, got {cfg.num_targets!r}")
    if not isinstance(cfg.min_keep, int) or cfg.min_keep < 0:
        raise ValueError(f"config key 'mask.min_keep' must be an int >= 0, got {cfg.min_keep!r}")
    if cfg.draw not in DRAWS:
        raise ValueError(f"config key 'mask.draw' must be one of {', '.join(DRAWS)}, got {cfg.draw!r}")
    if cfg.truncate not in TRUNCATES:
        raise ValueError(
            f"config key 'mask.truncate' must be one of {', '.join(TRUNCATES)}, got {cfg.truncate!r}; "
            "use min to cut contexts to the batch's smallest or pad to keep them whole"
        )


def _size_reachable(
    hw: tuple[int, int], grid: tuple[int, int], scale: tuple[float, float], aspect: tuple[float, float]
) -> bool:
    """Whether some (scale, aspect) in the ranges gives target size ``hw`` (closed bounds: a superset).

    With u = N*s*ar and v = N*s/ar, h = round(sqrt(u)) and w = round(sqrt(v)) clipped to the grid. In log
    space (x = log u, y = log v) the ranges are x + y in [2 log N*s0, 2 log N*s1] and x - y in
    [2 log a0, 2 log a1], and the size fixes a box for x and y: a 2-D linear feasibility problem, solved
    by eliminating y (Fourier-Motzkin). Exact, unlike a grid search that can miss thin slivers.
    """
    (h, w), (height, width) = hw, grid
    n = height * width

    def interval(k: int, top: int) -> tuple[float, float]:
        low = 2 * math.log(k - 0.5) if k > 1 else -math.inf  # sizes below 1 are clipped up to 1
        high = 2 * math.log(k + 0.5) if k < top else math.inf  # sizes above the cap are clipped to it
        return low, high

    xa, xb = interval(h, height - 1)
    ya, yb = interval(w, width - 1)
    pa, pb = 2 * math.log(n * scale[0]), 2 * math.log(n * scale[1])
    qa, qb = 2 * math.log(aspect[0]), 2 * math.log(aspect[1])
    lower = max(xa, ya + qa, pa - yb, (pa + qa) / 2)
    upper = min(xb, pb - ya, yb + qb, (pb + qb) / 2)
    return lower <= upper + 1e-9


class MultiBlockMaskSampler:
    """Samples I-JEPA multi-block masks: ``sampler(batch_size, generator) -> MaskBatch``.

    ``min_keep`` holds the effective value after any adaptation to the grid (see the module docstring);
    every context in every batch has at least that many patches.
    """

    max_rounds: int = 64  # redraws of the rejected images before the deterministic fallback placement

    def __init__(self, grid: int | tuple[int, int], cfg: MaskConfig = MaskConfig()) -> None:
        self.grid = _check_grid(grid)
        _check_config(cfg)
        self.cfg = cfg
        self.num_patches = self.grid[0] * self.grid[1]
        self.min_keep = self._calibrate_min_keep()

    # ----------------------------------------------------------------------------------------- block sizes

    def target_size(self, scale: float, aspect: float) -> tuple[int, int]:
        """(h, w) of a target block: ~scale of the patches with h / w ~ aspect, strictly inside the grid."""
        height, width = self.grid
        area = self.num_patches * scale
        h = round(math.sqrt(area * aspect))
        w = round(math.sqrt(area / aspect))
        return min(max(h, 1), height - 1), min(max(w, 1), width - 1)

    def context_size(self, scale: float) -> tuple[int, int]:
        """(h, w) of the square context block covering ~scale of the patches, clipped to the grid.

        The reference draw caps each side at the grid side minus one, as the published sampler does.
        """
        height, width = self.grid
        cap = 1 if self.cfg.draw == "reference" else 0
        side = round(math.sqrt(self.num_patches * scale))
        return min(max(side, 1), height - cap), min(max(side, 1), width - cap)

    def _draw_sizes(self, generator: torch.Generator) -> tuple[tuple[int, int], tuple[int, int]]:
        """One (target, context) block size per batch, so all images yield equal-length index tensors."""
        u = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
        if self.cfg.draw == "reference":
            u[1] = u[0]  # one draw sets both the target scale and its aspect
        (s0, s1), (a0, a1), (c0, c1) = self.cfg.target_scale, self.cfg.target_aspect, self.cfg.context_scale
        target = self.target_size(s0 + (s1 - s0) * u[0], a0 + (a1 - a0) * u[1])
        return target, self.context_size(c0 + (c1 - c0) * u[2])

    def reachable_target_sizes(self) -> list[tuple[int, int]]:
        """Every (h, w) the target ranges can produce on this grid (a tight superset: bounds are closed)."""
        height, width = self.grid
        scale, aspect = self.cfg.target_scale, self.cfg.target_aspect
        return [
            (h, w)
            for h in range(1, height)
            for w in range(1, width)
            if _size_reachable((h, w), self.grid, scale, aspect)
        ]

    def _largest_target_sizes(self) -> list[tuple[int, int]]:
        """Reachable target sizes not dominated in both h and w: the least favourable ones for the context."""
        reachable = self.reachable_target_sizes()
        return [p for p in reachable if not any(q != p and q[0] >= p[0] and q[1] >= p[1] for q in reachable)]

    # -------------------------------------------------------------------------------------------- placing

    def _place(
        self, n: int, target_hw: tuple[int, int], context_hw: tuple[int, int], generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Place n images' blocks uniformly (corners inclusive of the far border).

        Returns the (n, H*W) context masks with the targets removed, and the (n, M) target top/left corners.
        """
        (height, width), m = self.grid, self.cfg.num_targets
        (h, w), (hc, wc) = target_hw, context_hw
        t_top = torch.randint(0, height - h + 1, (n, m), generator=generator)
        t_left = torch.randint(0, width - w + 1, (n, m), generator=generator)
        c_top = torch.randint(0, height - hc + 1, (n,), generator=generator)
        c_left = torch.randint(0, width - wc + 1, (n,), generator=generator)
        covered = _block_masks(t_top, t_left, target_hw, self.grid).any(dim=1)
        context = _block_masks(c_top, c_left, context_hw, self.grid) & ~covered
        return context.flatten(1), t_top, t_left

    def _fallback(
        self, n: int, target_hw: tuple[int, int], context_hw: tuple[int, int], generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The placement that keeps the most context: all targets stacked in one corner, context opposite.

        It keeps hc*wc - max(0, hc+h-H) * max(0, wc+w-W) patches, which construction checked is >= min_keep
        for every reachable size. Which of the four corners is drawn at random to soften the bias.
        """
        (height, width), m = self.grid, self.cfg.num_targets
        (h, w), (hc, wc) = target_hw, context_hw
        flip = torch.randint(0, 2, (n, 2), generator=generator)
        t_top, t_left = flip[:, 0] * (height - h), flip[:, 1] * (width - w)
        c_top, c_left = (1 - flip[:, 0]) * (height - hc), (1 - flip[:, 1]) * (width - wc)
        covered = _block_masks(t_top, t_left, target_hw, self.grid)
        context = _block_masks(c_top, c_left, context_hw, self.grid) & ~covered
        return context.flatten(1), t_top[:, None].expand(n, m), t_left[:, None].expand(n, m)

    def _calibrate_min_keep(self) -> int:
        """The effective min_keep: the configured one, lowered where this grid makes it stall sampling."""
        (height, width), cfg = self.grid, self.cfg
        wanted = max(cfg.min_keep, 1)  # a context is never empty, so 0 means the same as 1
        asked = self.num_patches * cfg.context_scale[0]  # smallest context area the config asks for
        if max(asked, 1.0) < cfg.min_keep <= self.num_patches:
            # The config contradicts itself (the grid could hold min_keep, the asked context cannot): only
            # the person can say which of the two numbers is meant. A grid smaller than min_keep, or one whose
            # shape or size makes blocks round down, is adapted to below instead.
            raise ValueError(
                f"config key 'mask.min_keep'={cfg.min_keep} exceeds the smallest context the config asks "
                f"for: mask.context_scale={cfg.context_scale} covers {asked:.1f} of the {self.num_patches} "
                f"patches of the {height}x{width} grid even before targets are removed; set mask.min_keep <= "
                f"{max(math.floor(asked), 1)} or raise the lower end of mask.context_scale"
            )
        hc, wc = self.context_size(cfg.context_scale[0])  # the smallest context block
        largest = self._largest_target_sizes()
        generator = torch.Generator().manual_seed(_CALIBRATION_SEED)
        best_case = hc * wc  # most context any placement can keep, at the least favourable sizes
        typical = hc * wc  # most context that at least _ACCEPT_SHARE of random placements keep
        accept_one = 1.0  # share of random placements with a non-empty context
        for h, w in largest:
            best_case = min(best_case, hc * wc - max(0, hc + h - height) * max(0, wc + w - width))
            counts = self._place(_CALIBRATION_DRAWS, (h, w), (hc, wc), generator)[0].sum(dim=1)
            ranked = counts.sort(descending=True).values
            typical = min(typical, int(ranked[math.ceil(_ACCEPT_SHARE * _CALIBRATION_DRAWS) - 1]))
            accept_one = min(accept_one, float((counts >= 1).float().mean()))
        effective = max(1, min(wanted, best_case, typical))
        if effective < wanted:
            if wanted > self.num_patches:
                why = f"the {height}x{width} grid has only {self.num_patches} patches"
            elif wanted > hc * wc:
                why = f"the smallest context block is {hc}x{wc} (a square cut to the {height}x{width} grid)"
            else:
                why = (
                    f"with the largest target blocks {largest} (h x w) and the smallest context block "
                    f"{hc}x{wc}, fewer than {_ACCEPT_SHARE:.0%} of random placements keep {cfg.min_keep} "
                    f"context patches, so rejection sampling would stall"
                )
            logger.warning(
                "mask.min_keep=%d lowered to %d: %s. Set mask.min_keep <= %d to silence this, or use a "
                "larger grid, a smaller mask.target_scale or fewer mask.num_targets to keep %d.",
                cfg.min_keep,
                effective,
                why,
                effective,
                cfg.min_keep,
            )
        if accept_one < _ACCEPT_SHARE:
            logger.warning(
                "with mask.target_scale=%s and mask.num_targets=%d on the %dx%d grid the largest targets "
                "cover the whole context in %.0f%% of random placements, so sampling redraws often and some "
                "images may get the fallback placement (all targets in one corner). Lower mask.target_scale "
                "or mask.num_targets.",
                cfg.target_scale,
                cfg.num_targets,
                height,
                width,
                100 * (1 - accept_one),
            )
        return effective

    # ----------------------------------------------------------------------------------------- sampling

    def __call__(self, batch_size: int, generator: torch.Generator) -> MaskBatch:
        """Sample one batch of masks; a deterministic function of the generator's state."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        target_hw, context_hw = self._draw_sizes(generator)
        m, width = self.cfg.num_targets, self.grid[1]
        context = torch.zeros(batch_size, self.num_patches, dtype=torch.bool)
        t_top = torch.zeros(batch_size, m, dtype=torch.long)
        t_left = torch.zeros(batch_size, m, dtype=torch.long)
        pending = torch.arange(batch_size)
        # Rejection sampling, vectorised over the images still waiting for an acceptable placement.
        for _ in range(self.max_rounds):
            if pending.numel() == 0:
                break
            ctx, top, left = self._place(pending.numel(), target_hw, context_hw, generator)
            ok = ctx.sum(dim=1) >= self.min_keep
            done = pending[ok]
            context[done], t_top[done], t_left[done] = ctx[ok], top[ok], left[ok]
            pending = pending[~ok]
        fallbacks = pending.numel()
        if fallbacks:
            ctx, top, left = self._fallback(fallbacks, target_hw, context_hw, generator)
            context[pending], t_top[pending], t_left[pending] = ctx, top, left
        h, w = target_hw
        # A block's raster indices are its corner index plus fixed offsets, already in sorted order.
        offsets = (torch.arange(h)[:, None] * width + torch.arange(w)[None, :]).flatten()
        targets = (t_top * width + t_left)[..., None] + offsets
        valid = None
        if self.cfg.truncate == "pad":
            kept, valid = pad_to_largest(context)
            kept_mean = float(valid.sum(1).float().mean())  # real slots: every placed patch
        else:
            kept = truncate_to_smallest(context, generator)
            kept_mean = float(kept.shape[1])  # after truncation to the batch minimum
        stats = {
            "mask_context_block": float(context_hw[0] * context_hw[1]),  # patches in the block before targets
            "mask_context_placed": float(context.sum(1).float().mean()),  # after removing targets
            "mask_context_kept": kept_mean,
            "mask_target_patches": float(h * w),
            "mask_fallback_images": float(fallbacks),
            "mask_fallback_batch": float(fallbacks > 0),
        }
        return MaskBatch(context=kept, targets=targets, stats=stats, context_valid=valid)

    def __repr__(self) -> str:
        return f"MultiBlockMaskSampler(grid={self.grid}, cfg={self.cfg}, min_keep={self.min_keep})"
