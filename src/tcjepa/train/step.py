"""One optimizer step, shared by the training loop and ``tcjepa bench``, so the benchmark times what trains.

**Accumulation.** ``train.batch_size`` is the batch of one optimizer step whatever ``train.accum_steps``
is: the data stream, the masks and the schedules see the same steps, and only the memory of one forward
shrinks. The step cuts every tensor of the batch along dim 0 into ``accum_steps`` equal micro-batches,
scales each micro loss by ``1/accum_steps`` and back-propagates each, so the summed gradient is that of
the mean loss. It equals the whole-batch gradient when the loss is a mean over equal-sized items (the
prediction loss always is); a term averaged over a varying count (TC-JEPA's mean over present captions
when images have fewer than ``text.num_captions``) is averaged per micro-batch, a small reweighting. A
module passed as ``forward`` that has ``no_sync()`` (DDP) gets it for all but the last micro-step, so
gradients are all-reduced once per step, not once per micro-batch.

**Finite check: one host sync per step.** A NaN/inf loss or gradient must never reach the weights, and
the run must stop naming the step, before any checkpoint is written after it. The step reduces loss and
gradient norm to one device bool and reads it once, before ``optimizer.step()``: free on CPU, and on CUDA
one pipeline drain per step (the host waits for backward, then launches the optimizer), where the former
code drained twice (loss, then gradient norm). Skipping the update on the device and reading a flag only
on logging and saving steps would avoid the drain, but is exact only with a fused optimizer taking
``found_inf`` (the fused AdamW used on CUDA could; on CPU it would change the fingerprinted arithmetic) plus an
EMA gated on the flag and a device record of the first bad step; an approximate skip (zeroed gradients)
would still apply weight decay and momentum. Until a GPU profile shows the drain matters, the simple
check that is exactly right is the one used. The loop reads the loss and gradient norm as numbers only on
logging steps.

**Diagnostics before the update.** With ``diagnostics`` (the loop's logging steps) the method's
``grad_report()`` (e.g. TC-JEPA's conditioner gradient norms) reads the clipped, finite gradients just
before ``optimizer.step()``, the only moment they exist.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import Config
from ..methods.base import StepOutput
from .timing import PhaseTimers

_NO_TIMERS = PhaseTimers(enabled=False)


class TrainingDiverged(RuntimeError):
    """The loss or its gradient became NaN/inf; the weights were not updated and the last good checkpoint is kept."""

    @classmethod
    def at(cls, step: int, result: StepResult, kept: Path | None) -> TrainingDiverged:
        """The error for a non-finite ``result`` at ``step``; ``kept``: the last good checkpoint, if any."""
        where = str(kept) if kept is not None else "(none yet)"
        loss = float(result.loss)
        if not math.isfinite(loss):
            terms = ", ".join(f"{k}={as_float(v):.4g}" for k, v in result.terms.items())
            return cls(
                f"loss is {loss} at step {step} ({terms}). Training stopped; the last good checkpoint is kept "
                f"at {where}. Try a lower optim.lr, optim.grad_clip=1.0, or train.precision=fp32."
            )
        # A finite loss with a NaN/inf gradient would silently poison the weights in optimizer.step().
        return cls(
            f"gradient norm is {float(result.grad_norm)} at step {step} although the loss is finite ({loss:.4g}); "
            f"the weights were not updated. The last good checkpoint is kept at {where}. A term of the loss has "
            "a non-finite gradient; try train.precision=fp32 or another loss.sparse_form, and report it."
        )


@dataclass
class StepResult:
    loss: torch.Tensor  # detached, the loss of the whole step (sum of the scaled micro losses)
    metrics: dict[str, float | torch.Tensor]  # StepOutput.logged(): loss, terms and report, means over micro-batches
    terms: dict[str, float | torch.Tensor]  # the loss terms alone (means), named in the divergence message
    grad_norm: torch.Tensor  # total gradient norm before clipping
    finite: bool  # False: loss or gradient was NaN/inf and nothing was updated
    grad_stats: dict[str, float] = field(default_factory=dict)  # method.grad_report() on diagnostics steps


def as_float(v: float | torch.Tensor) -> float:
    return float(v.item()) if isinstance(v, torch.Tensor) else float(v)


def autocast_for(device: torch.device, precision: str) -> Callable[[], AbstractContextManager]:
    """A factory of the forward's autocast context: bf16 autocast for ``train.precision=bf16``, else none."""
    if precision == "bf16":
        return functools.partial(torch.autocast, device.type, dtype=torch.bfloat16)
    return nullcontext


def grad_clip(cfg: Config) -> float:
    """``optim.grad_clip`` as the max norm to clip to; 0 means no clipping (the norm is still computed)."""
    return cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf")


def split_batch(batch: dict, parts: int) -> list[dict]:
    """``parts`` micro-batches: every tensor cut along dim 0 into equal pieces; other entries shared."""
    if parts == 1:
        return [batch]
    size = batch["images"].shape[0]
    if size % parts:
        raise ValueError(
            f"a batch of {size} images cannot be cut into train.accum_steps={parts} equal micro-batches; "
            "make the per-process train.batch_size a multiple of train.accum_steps"
        )
    micro = [dict(batch) for _ in range(parts)]
    for key, value in batch.items():
        if not isinstance(value, torch.Tensor):
            continue
        if value.shape[0] != size:
            raise ValueError(
                f"batch[{key!r}] has {value.shape[0]} rows but the batch has {size} images; every tensor of a "
                "batch must have the batch as dim 0 to be cut into train.accum_steps micro-batches"
            )
        for piece, pieces in zip(micro, value.split(size // parts)):
            piece[key] = pieces
    return micro


def train_step(
    method: torch.nn.Module,
    forward: Callable[..., StepOutput],
    optimizer: torch.optim.Optimizer,
    batch: dict,
    step: int,
    *,
    accum_steps: int = 1,
    clip: float = float("inf"),
    autocast: Callable[[], AbstractContextManager] = nullcontext,
    timers: PhaseTimers = _NO_TIMERS,
    diagnostics: bool = False,
) -> StepResult:
    """Forward and backward over ``accum_steps`` micro-batches, clip, check, update, EMA.

    ``forward`` is ``method`` or a wrapper of it (``torch.compile``, DDP); ``method`` owns ``after_step``.
    ``diagnostics`` asks the method for its logged diagnostics (logging steps only: they cost a little).
    A non-finite loss or gradient returns ``finite=False`` with the weights, optimizer state and EMA target
    untouched; the caller decides how to stop (:meth:`TrainingDiverged.at`).
    """
    timers.next_step()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    no_sync = getattr(forward, "no_sync", None)
    optimizer.zero_grad(set_to_none=True)
    total: torch.Tensor | None = None
    sums: dict[str, float | torch.Tensor] = {}
    term_sums: dict[str, float | torch.Tensor] = {}
    micro = split_batch(batch, accum_steps)
    for i, part in enumerate(micro):
        last = i == len(micro) - 1
        with nullcontext() if last or no_sync is None else no_sync():
            with timers.phase("forward"), autocast():
                out = forward(part, diagnostics=diagnostics)
            loss, metrics = out.loss, out.logged()
            if accum_steps > 1:
                loss = loss / accum_steps
            with timers.phase("backward"):
                loss.backward()
        total = loss.detach() if total is None else total + loss.detach()
        for key, value in metrics.items():
            sums[key] = value if key not in sums else sums[key] + value
        for key, value in out.terms.items():
            term_sums[key] = value.detach() if key not in term_sums else term_sums[key] + value.detach()
    assert total is not None
    means = sums if accum_steps == 1 else {key: value / accum_steps for key, value in sums.items()}
    terms = term_sums if accum_steps == 1 else {key: value / accum_steps for key, value in term_sums.items()}
    with timers.phase("clip"):
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
        if hasattr(grad_norm, "full_tensor"):  # FSDP: the norm over every rank's shards, as one number
            grad_norm = grad_norm.full_tensor()
        finite = bool(torch.isfinite(total) & torch.isfinite(grad_norm))  # the step's one host sync
    if not finite:
        return StepResult(total, means, terms, grad_norm, finite=False)
    stats = method.grad_report() if diagnostics else {}
    with timers.phase("optimizer"):
        optimizer.step()
    with timers.phase("ema"):
        method.after_step(step)
    return StepResult(total, means, terms, grad_norm, finite=True, grad_stats=stats)
