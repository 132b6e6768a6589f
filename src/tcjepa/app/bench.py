"""``tcjepa bench``: step time, throughput, peak memory and analytic FLOPs per method, in one process.

Shared machines are noisy, so methods are timed interleaved (round-robin, several rounds) on the same
pre-built batches and the median is reported; compare methods by the ratio from one invocation.
The step timed is the loop's own (``train.step.train_step``: accumulation, clipping, the finite check,
the EMA), so a change to the step shows here; its phases are timed too (``phase_ms``, medians in ms).
It excludes data loading; the data side (rendering, masks, caption lookup with a warm cache) and the
cost of running the text encoder on the fly are reported beside it.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import replace

import torch

from ..config import Config, cond_layer_indices
from ..data.captions import text_dim_for
from ..data.stream import PretrainStream
from ..flops import Shapes, text_encoder_forward, training_step
from ..methods import METHODS, build_method
from ..methods.ijepa import encoder_spec
from ..models.conditioning import conditioner_class
from ..train.loop import pick_device
from ..train.optim import build_optimizer
from ..train.step import TrainingDiverged, autocast_for, grad_clip, train_step
from ..train.timing import PhaseTimers

# Dense peak FLOP/s by GPU name fragment and precision, for MFU.
PEAK_FLOPS = {
    "H100": {"bf16": 989e12, "fp32": 67e12},
    "H200": {"bf16": 989e12, "fp32": 67e12},
    "A100": {"bf16": 312e12, "fp32": 19.5e12},
}


def expected_mask_sizes(stream: PretrainStream, batches: int = 50) -> tuple[float, float]:
    """Mean context and target-block lengths the sampler produces (after truncation to the global batch's minimum)."""
    g = torch.Generator().manual_seed(0)
    ctx, tgt = [], []
    for _ in range(batches):
        m = stream.masks(stream.cfg.train.batch_size, g)  # masks are drawn (and cut) for the global batch
        ctx.append(m.context.shape[1])
        tgt.append(m.targets.shape[2])
    return statistics.fmean(ctx), statistics.fmean(tgt)


def flop_shapes(
    cfg: Config, context: float, target: float, words: int, method: str, real_words: float | None = None
) -> Shapes:
    spec = encoder_spec(cfg)  # the spec alone: building a ViT-H just to read its shape took minutes on CPU
    p = cfg.model.predictor
    # The analytic count models every registered conditioner (flops.conditioner_forward), in the blocks
    # model.predictor.cond_layers names where it has block hooks.
    conditioned = METHODS[method].text_conditioned and bool(conditioner_class(p.conditioning).hooks)
    return Shapes.of(
        spec,
        p.dim,
        p.depth,
        context=context,
        target=target,
        num_targets=cfg.mask.num_targets,
        captions=cfg.text.num_captions if conditioned else 0,
        words=words if conditioned else 0,
        real_words=real_words if conditioned else None,
        text_dim=text_dim_for(cfg) if conditioned else 0,
        cond_layers=len(cond_layer_indices(p.cond_layers, p.depth)),
        conditioning=p.conditioning if conditioned else "none",
        fusion=p.caption_fusion,
    )


def loop_step(
    cfg: Config,
    method: torch.nn.Module,
    opt: torch.optim.Optimizer,
    batch: dict,
    step: int,
    timers: PhaseTimers | None = None,
    forward: Callable | None = None,
) -> None:
    """One step exactly as ``tcjepa train`` takes it: ``train_step`` with this config's accumulation,
    clipping and precision (the finite check included, so a diverging benchmark says so)."""
    result = train_step(
        method,
        method if forward is None else forward,  # a compiled module has no truth value
        opt,
        batch,
        step,
        accum_steps=cfg.train.accum_steps,
        clip=grad_clip(cfg),
        autocast=autocast_for(next(method.parameters()).device, cfg.train.precision),
        timers=timers or PhaseTimers(),
    )
    if not result.finite:
        raise TrainingDiverged.at(step, result, None)


def step_memory_mb(cfg: Config, method: torch.nn.Module, opt: torch.optim.Optimizer, batch: dict) -> float:
    """Training-step memory from tensor bytes: parameters (both encoders), gradients, optimizer state and
    every tensor autograd saves for backward (unique storages). Deterministic, unlike a process's RSS,
    whose allocator keeps freed memory; used on CPU, where no allocator statistics exist."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        storages[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loop_step(cfg, method, opt, batch, 0)
    params = sum(p.numel() * p.element_size() for p in method.parameters())
    grads = sum(p.grad.numel() * p.grad.element_size() for p in method.parameters() if p.grad is not None)
    state = sum(
        v.numel() * v.element_size() for st in opt.state.values() for v in st.values() if isinstance(v, torch.Tensor)
    )
    return (params + grads + state + sum(storages.values())) / 2**20


def peak_memory_mb(
    cfg: Config, method: torch.nn.Module, opt: torch.optim.Optimizer, batch: dict, device: torch.device
) -> tuple[float, str]:
    """Peak allocated memory on CUDA; on CPU the tensor-byte count of :func:`step_memory_mb`."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        loop_step(cfg, method, opt, batch, 0)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20, "cuda max_memory_allocated"
    return step_memory_mb(cfg, method, opt, batch), "params+grads+optimizer+saved activations"


def run_bench(
    cfg: Config,
    methods: list[str],
    steps: int = 10,
    rounds: int = 3,
    flops_only: bool = False,
    emit: Callable[[dict], None] = lambda r: print(json.dumps(r), flush=True),
) -> list[dict]:
    device = pick_device(cfg)
    text_methods = [m for m in methods if METHODS[m].text_conditioned]
    # One stream for every method (same batches); it carries captions when any method reads them.
    stream = PretrainStream(cfg, METHODS[(text_methods or methods)[0]].batch_spec(cfg))
    context, target = expected_mask_sizes(stream)
    words = cfg.text.max_len - (0 if cfg.text.keep_special else 2)
    base = methods[0]  # overheads and step-time ratios are against the first method listed
    base_flops = training_step(flop_shapes(cfg, context, target, words, base))["total"]
    results = []
    if flops_only:
        for name in methods:
            parts = training_step(flop_shapes(cfg, context, target, words, name))
            rec = {
                "method": name,
                "flops_per_img": parts["total"],  # keys and values over every word slot: an upper bound
                f"overhead_vs_{base}": parts["total"] / base_flops - 1,
                "caption_words": words,
                "context_tokens": context,
                "target_tokens": target,
                "breakdown": {k: v for k, v in parts.items() if k != "total"},
                "text_encoder_flops_per_img": text_encoder_forward(cfg.text.num_captions, cfg.text.max_len)
                if METHODS[name].text_conditioned
                else 0.0,
            }
            emit(rec)
            results.append(rec)
        return results

    n_batches = min(steps, 4)
    t0 = time.perf_counter()
    batches = [stream[i] for i in range(n_batches)]  # first pass warms the caption cache
    cold_ms = 1000 * (time.perf_counter() - t0) / n_batches
    t0 = time.perf_counter()
    batches = [stream[i] for i in range(n_batches)]
    warm_ms = 1000 * (time.perf_counter() - t0) / n_batches
    for b in batches:
        b.pop("stats")
    words_seen = statistics.fmean(b["text"].shape[2] for b in batches) if "text" in batches[0] else 0
    # The words conditioner projects the real words only: count what these batches hold.
    real_words = (
        statistics.fmean(
            float((b["text_mask"].bool() & b["caption_mask"].bool()[..., None]).float().mean()) * b["text"].shape[2]
            for b in batches
        )
        if "text" in batches[0]
        else None
    )
    text_ms = None
    if text_methods:
        flat = [c for b in batches[:1] for caps in b["captions"] for c in caps]
        t0 = time.perf_counter()
        stream.cache.encoder.encode(flat)
        text_ms = 1000 * (time.perf_counter() - t0)
    batches = [_to(b, device) for b in batches]

    built = {}
    for name in methods:
        torch.manual_seed(cfg.seed)
        m = build_method(replace(cfg, method=name)).to(device)
        opt = build_optimizer(m, cfg, device)  # the loop's AdamW (fused on CUDA)
        forward = torch.compile(m) if cfg.train.compile else m  # as the loop does
        for i in range(2):  # warm-up: allocator, kernels, compile
            loop_step(cfg, m, opt, batches[i % n_batches], i, forward=forward)
        built[name] = (m, opt, forward, PhaseTimers(enabled=True, device=device))
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(rounds):
        for name in methods:
            m, opt, forward, timers = built[name]
            for i in range(steps):
                _sync(device)
                t = time.perf_counter()
                loop_step(cfg, m, opt, batches[i % n_batches], i, timers, forward)
                _sync(device)
                times[name].append(time.perf_counter() - t)
    for name in methods:
        m, opt, _, timers = built[name]
        step_s = statistics.median(times[name])
        parts = training_step(flop_shapes(cfg, context, target, round(words_seen) or words, name, real_words))
        rec = {
            "method": name,
            "step_ms": 1000 * step_s,
            "img_per_s": stream.local_batch / step_s,
            "flops_per_img": parts["total"],
            "peak_mem_mb": None,
            "batch_size": stream.local_batch,
            "step_ms_iqr": _iqr_ms(times[name]),
            "data_ms_warm_cache": warm_ms,
            "data_ms_cold_cache": cold_ms,
            "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{torch.get_num_threads()}",
            "precision": cfg.train.precision,
            "caption_words": round(words_seen) if m.text_conditioned else 0,
            "accum_steps": cfg.train.accum_steps,
            "phase_ms": timers.medians_ms(),  # median per phase; the rest of step_ms is host overhead and syncs
        }
        if m.text_conditioned:
            rec["text_encode_ms_on_the_fly"] = text_ms
            rec["step_ms_with_text_on_the_fly"] = rec["step_ms"] + (text_ms or 0.0)
        rec["peak_mem_mb"], rec["peak_mem_source"] = peak_memory_mb(cfg, m, opt, batches[0], device)
        rec["mfu"] = _mfu(parts["total"] * rec["img_per_s"], device, cfg.train.precision)
        emit(rec)
        results.append(rec)
    for name in methods[1:]:
        emit({f"ratio_{name}_over_{base}_step_ms": statistics.median(times[name]) / statistics.median(times[base])})
    return results


def _iqr_ms(xs: list[float]) -> float:
    q = statistics.quantiles(xs, n=4) if len(xs) >= 4 else [min(xs), 0, max(xs)]
    return 1000 * (q[2] - q[0])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _to(batch: dict, device: torch.device) -> dict:
    from ..data.batch import to_device

    return to_device(batch, device)


def _mfu(flops_per_s: float, device: torch.device, precision: str) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name()
    for key, peaks in PEAK_FLOPS.items():
        if key in name:
            return flops_per_s / peaks[precision]
    return None
