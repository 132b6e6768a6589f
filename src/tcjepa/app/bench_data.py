"""``tcjepa bench CONFIG --data-only``: the loader alone (decode, crop, captions, masks), and what a GPU eats.

The loader is timed as training runs it: ``pretrain_loader`` over the step-indexed stream with
``data.num_workers`` workers, after a warm-up that starts the workers (and, for a text-conditioned method,
fills the caption cache or reads ``text.store``). Against it stands what one GPU consumes at the config's
model: images/s = MFU x dense peak / training FLOPs per image (analytic, ``tcjepa.flops``), at a stated
MFU. ``loader_cores_per_gpu`` is how many loader processes of the speed measured here one GPU would need.
"""

from __future__ import annotations

import os
import platform
import time

import torch

from ..config import Config
from ..data.stream import PretrainStream, pretrain_loader
from ..flops import training_step
from ..methods import METHODS
from .bench import PEAK_FLOPS, expected_mask_sizes, flop_shapes

ASSUMED_MFU = 0.4  # a well-tuned ViT step on one H100/H200 in bf16; the target for ViT-B/16
GPU = "H100"  # dense bf16 peak from PEAK_FLOPS; H200 has the same compute


def run_data_bench(cfg: Config, steps: int = 20, warmup: int = 3, mfu: float = ASSUMED_MFU) -> dict:
    """One JSON-able record: loader images/s with ``data.num_workers`` workers and the GPU's appetite."""
    method = METHODS[cfg.method]
    stream = PretrainStream(cfg, method.batch_spec(cfg))
    total = warmup + steps
    if len(stream) < total:
        raise ValueError(f"train.steps={len(stream)} is shorter than the {total} steps the benchmark reads")
    loader = iter(pretrain_loader(stream, 0, cfg.data.num_workers))
    for _ in range(warmup):
        next(loader)
    t0 = time.perf_counter()
    in_worker_ms = []
    for _ in range(steps):
        in_worker_ms.append(next(loader)["stats"]["data_ms"])
    elapsed = time.perf_counter() - t0
    img_per_s = steps * stream.local_batch / elapsed
    context, target = expected_mask_sizes(stream)
    words = cfg.text.max_len - (0 if cfg.text.keep_special else 2)
    flops = training_step(flop_shapes(cfg, context, target, words, cfg.method))["total"]
    gpu_img_per_s = mfu * PEAK_FLOPS[GPU]["bf16"] / flops
    workers = max(1, cfg.data.num_workers)
    per_worker = img_per_s / workers
    return {
        "kind": "data-only",
        "data": cfg.data.name,
        "method": cfg.method,
        "image_size": cfg.data.image_size,
        "batch_size": stream.local_batch,
        "num_workers": cfg.data.num_workers,
        "loader_img_per_s": img_per_s,
        "step_ms_in_worker_median": sorted(in_worker_ms)[len(in_worker_ms) // 2],
        "train_flops_per_img": flops,
        f"gpu_{GPU}_bf16_img_per_s_at_mfu_{mfu}": gpu_img_per_s,
        "loader_cores_per_gpu": gpu_img_per_s / per_worker,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
    }
