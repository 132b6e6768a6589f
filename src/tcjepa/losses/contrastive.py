"""Image-text contrastive losses (CLIP's symmetric InfoNCE, SigLIP's pairwise sigmoid) over all ranks.

**One global batch, whatever the ranks.** Each rank holds its own images and their captions. The other
ranks' embeddings are gathered *with their gradient* (:func:`gather_with_grad`: forward all-gather, backward
all-reduce of the gathered tensor's gradient, each rank keeping its own slice), and each rank computes the
loss rows of its own images against every rank's texts (and, for CLIP, of its own texts against every
image). Every row of the global-batch loss is then computed exactly once, somewhere.

**Scaling.** With a global loss ``L = sum(rows) / n`` (``n``: valid pairs over all ranks), rank ``r`` returns
``L_r = W * sum(its rows) / n``, so that ``sum_r L_r = W * L``. Rank ``r``'s backward reaches every rank's
features through the gather, and the all-reduce in the gather's backward adds those contributions up, so
each rank's parameter gradient holds its own samples' share of ``W * dL``; DDP then *averages* over the W
ranks, which leaves exactly ``dL``: the one-process gradient of the global-batch loss. The value ``L_r``
averaged over ranks (what the loop logs) is ``L``. In one process W = 1 and nothing is gathered.

**Pairs without a caption** (an image with no usable caption) are left out entirely: neither an anchor nor
a negative on either side. ``n`` counts the pairs kept over all ranks.

A micro-batch of ``train.accum_steps`` is a contrastive batch of its own (negatives come from it only).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F

CLIP_MAX_SCALE = 100.0  # CLIP clips the logit scale exp(t) at 100
CLIP_INIT_TEMPERATURE = 0.07  # CLIP's initial temperature: t = log(1 / 0.07)
SIGLIP_INIT_LOG_SCALE = math.log(10.0)  # SigLIP's t' = log 10
SIGLIP_INIT_BIAS = -10.0


def world() -> tuple[int, int]:
    """(rank, world size) of the process group in use; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward hands each rank the summed gradient of its own slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        rank, size = world()
        ctx.rank, ctx.rows = rank, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        # Every rank's loss saw the whole gathered tensor: add their gradients up, keep this rank's rows.
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Every rank's ``x`` concatenated in rank order (equal rows per rank), differentiable; ``x`` in one process."""
    if world()[1] == 1:
        return x
    return _GatherWithGrad.apply(x)


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Every rank's ``x`` (masks, counts) concatenated in rank order, without a gradient."""
    size = world()[1]
    if size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def _global_view(valid: torch.Tensor) -> tuple[torch.Tensor, int, int, torch.Tensor]:
    """All ranks' validity flags, this rank's first row in the global batch, W, and n (valid pairs, >= 1)."""
    rank, size = world()
    all_valid = gather_no_grad(valid)
    return all_valid, rank * valid.shape[0], size, all_valid.sum().clamp_min(1)


def clip_loss(
    img: torch.Tensor, txt: torch.Tensor, valid: torch.Tensor, log_scale: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Symmetric InfoNCE of L2-normalised ``img`` and ``txt`` (B, E) pairs; ``valid`` (B,) bool.

    The global loss is the mean over valid pairs of (image->text CE + text->image CE) / 2, at logit scale
    ``min(exp(log_scale), 100)``. Returns this rank's share (module docstring) and the (detached) diagnostics
    ``i2t_acc`` (this rank's valid rows whose own caption scores highest) and ``pairs`` (valid, this rank).
    """
    all_valid, first, size, n = _global_view(valid)
    all_img, all_txt = gather_with_grad(img), gather_with_grad(txt)
    scale = log_scale.exp().clamp(max=CLIP_MAX_SCALE)
    rows = valid.nonzero().squeeze(1)
    labels = rows + first
    blocked = ~all_valid  # columns of pairs without a caption
    i2t = (scale * img[rows] @ all_txt.T).masked_fill(blocked, float("-inf"))
    t2i = (scale * txt[rows] @ all_img.T).masked_fill(blocked, float("-inf"))
    total = F.cross_entropy(i2t, labels, reduction="sum") + F.cross_entropy(t2i, labels, reduction="sum")
    loss = size * total / (2 * n)
    with torch.no_grad():
        hits = (i2t.argmax(1) == labels).float().sum() if len(rows) else img.new_zeros(())
        report = {"i2t_acc": hits / max(1, len(rows)), "pairs": valid.float().sum()}
    return loss, report


def siglip_loss(
    img: torch.Tensor, txt: torch.Tensor, valid: torch.Tensor, log_scale: torch.Tensor, bias: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SigLIP's pairwise sigmoid loss of L2-normalised ``img`` and ``txt`` (B, E); ``valid`` (B,) bool.

    Every (image, text) pair of valid pairs is a binary problem, +1 for an image's own caption and -1
    otherwise, on logits ``exp(log_scale) * cos + bias``; the global loss is the sum over all pairs divided
    by the number of images, as in the paper. This rank computes its own images against every text, which
    covers each pair once. Returns this rank's share (module docstring) and detached diagnostics.
    """
    all_valid, first, size, n = _global_view(valid)
    all_txt = gather_with_grad(txt)  # images are only ever rows here: no need to gather them
    rows = valid.nonzero().squeeze(1)
    cols = all_valid.nonzero().squeeze(1)
    logits = log_scale.exp() * img[rows] @ all_txt[cols].T + bias
    signs = torch.where((rows + first)[:, None] == cols[None, :], 1.0, -1.0).to(logits.dtype)
    loss = -size * F.logsigmoid(signs * logits).sum() / n
    with torch.no_grad():
        own = (rows + first)[:, None] == cols[None, :]
        hits = (cols[logits.argmax(1)] == rows + first).float().sum() if len(rows) and len(cols) else 0.0
        report = {
            "i2t_acc": torch.as_tensor(hits, dtype=img.dtype) / max(1, len(rows)),
            "pairs": valid.float().sum(),
            "pos_prob": torch.sigmoid(logits[own]).mean() if own.any() else img.new_zeros(()),
        }
    return loss, report
