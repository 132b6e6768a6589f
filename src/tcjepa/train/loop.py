"""The pretraining loop, top to bottom in one function (nanoGPT style): nothing hides in callbacks.

Any method with the docs/design.md §3 interface trains here; the loop never branches on the method's name.
The step itself (micro-batches, backward, clip, finite check, update, EMA) is ``step.train_step``, one
call here, so ``tcjepa bench`` times exactly the step that trains.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import closing, nullcontext
from datetime import datetime
from pathlib import Path

import torch
from tqdm import tqdm

from ..config import EMA_INIT_SHARE_WARN, Config
from ..data.batch import to_device
from ..data.captions import build_caption_cache
from ..data.stream import PretrainStream, heldout_batch, pretrain_loader
from ..methods import build_method
from ..methods.schedules import ema_at, ema_init_share
from .checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    atomic_save,
    check_compatible,
    latest_checkpoint,
    load_checkpoint,
    read_meta,
    rng_state,
    set_rng_state,
)
from .distributed import (
    DistContext,
    barrier,
    combine_over_ranks,
    full_training_state,
    init_distributed,
    is_sharded,
    load_training_state,
    process_device,
    shutdown,
    wrap_for_training,
)
from .monitors import DeadZoneAlarm, FixedBatchMonitor
from .online_probe import OnlineProbe
from .optim import build_optimizer
from .schedules import lr_at, wd_at
from .sharded import load_sharded_into, save_sharded
from .step import TrainingDiverged, as_float, autocast_for, grad_clip, train_step
from .tensorboard import open_tensorboard
from .wandb_log import open_wandb, require_wandb

log = logging.getLogger("tcjepa.train")


def resolve_run_dir(cfg: Config) -> Path:
    if cfg.run.dir:
        return Path(cfg.run.dir)
    name = cfg.run.name or f"{cfg.method}-{datetime.now():%Y%m%d-%H%M%S}"
    return Path("runs") / name


def pick_device(cfg: Config) -> torch.device:
    if cfg.train.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but CUDA is not available; use train.device=cpu or auto")
    if cfg.train.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.train.device)


def _trim_metrics(path: Path, last_step: int) -> None:
    """Drop log lines written after the checkpoint we resume from, so no step appears twice."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] < last_step]
    path.write_text("".join(line + "\n" for line in keep))


def _warn_ema_horizon(cfg: Config) -> None:
    share = ema_init_share(cfg, cfg.train.steps)
    if share > EMA_INIT_SHARE_WARN:
        log.warning(
            "with optim.ema=%s over train.steps=%d the EMA target encoder (the one evaluated and exported) will "
            "still be %.0f%% its random initialisation at the end. Lower optim.ema's start (e.g. [0.98, 0.999] "
            "for runs of a few hundred steps) or train longer.",
            list(cfg.optim.ema),
            cfg.train.steps,
            100 * share,
        )


COUNTER_SUFFIXES = ("_images", "_batch", "_dropped", "_captionless", "_skipped", "_misses")


MIN_IMAGES_JUDGED = 512


class TooManySkipped(RuntimeError):
    """More of the images seen were unreadable than ``data.max_skipped_fraction`` allows."""


def _check_skipped(cfg: Config, stats: dict[str, float], images_seen: int, latest: Path) -> None:
    """Stop a run that is training on mostly substitutes (``data.on_error=skip`` replaces unreadable images)."""
    skipped = stats.get("data_skipped_total", 0.0)
    # Judged once enough images were read that a few bad ones early on cannot tip it.
    if images_seen < MIN_IMAGES_JUDGED or skipped / images_seen <= cfg.data.max_skipped_fraction:
        return
    reasons = ", ".join(
        f"{k.removeprefix('data_').removesuffix('_skipped_total')}: {v:.0f}"
        for k, v in sorted(stats.items())
        if k.startswith("data_") and k.endswith("_skipped_total") and k != "data_skipped_total"
    )
    kept = latest if latest.exists() else "(none yet)"
    raise TooManySkipped(
        f"{skipped:.0f} of the {images_seen} images read since the start of this run were unreadable and replaced "
        f"({reasons or 'no reason recorded'}), more than data.max_skipped_fraction={cfg.data.max_skipped_fraction}. "
        f"Check data.path with `tcjepa data validate`, or raise the threshold; the last checkpoint is kept at {kept}."
    )


def _log_counts(counts: dict[str, float]) -> None:
    """The end-of-run summary of what was counted instead of passing silently (skips, fallbacks, drops)."""
    shown = {k.removesuffix("_total"): v for k, v in sorted(counts.items()) if v}
    if shown:
        log.info("counted over the run: %s", ", ".join(f"{k}={v:.0f}" for k, v in shown.items()))


class _WindowStats:
    """Means of the per-batch data statistics over a logging window, so no batch's fallback goes unseen."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0
        self.totals: dict[str, float] = {}  # whole-run sums of the counters (``*_images``, ``*_batch``, ...)

    def add(self, stats: dict) -> None:
        self.count += 1
        for k, v in stats.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
            if k.endswith(COUNTER_SUFFIXES):
                self.totals[k] = self.totals.get(k, 0.0) + float(v)

    def flush(self) -> dict[str, float]:
        out = {k: v / max(1, self.count) for k, v in self.sums.items()}
        out.update({f"{k}_total": v for k, v in self.totals.items()})
        self.sums, self.count = {}, 0
        return out


def pretrain(cfg: Config, resume: bool = False, progress: bool = True, allow_schedule_change: bool = False) -> Path:
    """Train ``cfg.method`` for ``cfg.train.steps`` steps; returns the run folder.

    Resuming with another ``train.steps`` is refused unless ``allow_schedule_change``: every schedule (lr,
    weight decay, EMA) is a function of the run length, so the resumed run would follow a different curve.
    Under torchrun every process runs this function; see ``train/distributed.py``.
    """
    ctx = init_distributed(pick_device(cfg).type)
    try:
        return _pretrain(cfg, ctx, resume, progress, allow_schedule_change)
    finally:
        shutdown(ctx)


def _pretrain(cfg: Config, ctx: DistContext, resume: bool, progress: bool, allow_schedule_change: bool) -> Path:
    require_wandb(cfg.train.wandb)  # every rank, before any work: a missing package is a setup error
    run_dir = resolve_run_dir(cfg)
    ckpt_dir = run_dir / "checkpoints"
    latest = latest_checkpoint(ckpt_dir)  # latest.dcp (sharded) or latest.pt
    if not resume and (latest.exists() or latest.is_symlink()):
        raise CheckpointError(
            f"{run_dir} already holds a run (checkpoints/{latest.name}). Pass --resume to continue it, or choose "
            "another run.dir / run.name; tcjepa never overwrites a run."
        )
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = process_device(pick_device(cfg), ctx)
    torch.manual_seed(cfg.seed)

    method = build_method(cfg).to(device)
    # Shard (FSDP) or wrap (DDP) before the optimizer exists: FSDP replaces the parameters it shards.
    wrapped = wrap_for_training(method, ctx, device, cfg.train.strategy)
    optimizer = build_optimizer(method, cfg, device)
    start_step = 0
    if resume:
        # A sharded checkpoint's tensors are read below, into this rank's shards; here its step, config, RNG.
        sharded_ckpt = latest.name == "latest.dcp"
        state = read_meta(latest) if sharded_ckpt else load_checkpoint(latest, map_location=device)
        check_compatible(latest, state["config"], cfg.to_dict())
        old_steps = state["config"]["train"]["steps"]
        if old_steps != cfg.train.steps:
            if not allow_schedule_change:
                raise CheckpointError(
                    f"{latest} was trained with train.steps={old_steps}, this run asks for {cfg.train.steps}. "
                    "The lr, weight-decay and EMA schedules depend on train.steps, so resuming would switch "
                    f"to other curves mid-run. Resume with train.steps={old_steps}, or pass "
                    "--allow-schedule-change to accept the new schedules."
                )
            log.warning("train.steps changed from %s to %s: schedules are recomputed", old_steps, cfg.train.steps)
        if sharded_ckpt:
            load_sharded_into(method, optimizer, latest)  # DCP reshards if the number of ranks changed
        else:
            load_training_state(method, optimizer, state)  # FSDP keeps each rank's shard of the full tensors
        set_rng_state(state["rng"])
        start_step = state["step"]
        log.info("resumed %s at step %d", run_dir, start_step)
    if ctx.is_main:
        if method.has_ema_target:
            _warn_ema_horizon(cfg)
        if method.frozen_target:
            log.info(
                "targets from the frozen teacher %s (sha256 %s): no EMA; the context encoder is the encoder "
                "evaluated and exported",
                cfg.model.target.removeprefix("frozen:"),
                method.teacher_record.sha256[:16],
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(cfg.to_yaml())
    metrics_path = run_dir / "metrics.jsonl"
    if ctx.is_main and resume:
        _trim_metrics(metrics_path, start_step)
    elif ctx.is_main and metrics_path.exists():
        metrics_path.unlink()  # a folder without a checkpoint holds no run to lose

    def save(step: int) -> None:
        nonlocal latest
        if cfg.train.checkpoint_format == "sharded":  # every rank writes its shards; no rank gathers the model
            meta = {
                "format": FORMAT_VERSION,
                "step": step,
                "config": cfg.to_dict(),
                "optimizer_format": "fqn",
                "rng": rng_state(),
            }
            save_sharded(method, optimizer, meta, ckpt_dir, cfg.train.keep_every, ctx)
            latest = ckpt_dir / "latest.dcp"
            return
        model_state, optim_state, optim_format = full_training_state(method, optimizer)  # all ranks (FSDP)
        if not ctx.is_main:  # the full state is the same on every rank; rank 0 writes it
            return
        state = {
            "format": FORMAT_VERSION,
            "step": step,
            "config": cfg.to_dict(),
            "method": model_state,
            "optimizer": optim_state,
            "optimizer_format": optim_format,
            "rng": rng_state(),
        }
        atomic_save(state, ckpt_dir / "latest.pt")
        if cfg.train.keep_every and step % cfg.train.keep_every == 0:
            atomic_save(state, ckpt_dir / f"step_{step}.pt")

    spec = method.batch_spec(cfg)
    needs_text = spec.text != "none"
    stream = PretrainStream(cfg, spec, ctx.rank, ctx.world_size)
    loader = pretrain_loader(stream, start_step, cfg.data.num_workers)
    monitor = online = None
    # Under FSDP a forward needs every rank, so every rank runs the monitors (rank 0 logs them).
    sharded = ctx.active and cfg.train.strategy == "fsdp"
    if cfg.train.monitor_every and (ctx.is_main or sharded):
        cache = build_caption_cache(cfg) if needs_text else None
        fixed = heldout_batch(cfg, min(128, max(8, cfg.train.batch_size)), cache)
        monitor = FixedBatchMonitor(to_device(fixed, device))
        if cfg.train.online_probe:
            online = OnlineProbe(cfg.data.image_size, cache=cache, device=device)
    alarm = DeadZoneAlarm()
    autocast = autocast_for(device, cfg.train.precision)
    forward = torch.compile(wrapped) if cfg.train.compile else wrapped
    clip = grad_clip(cfg)

    method.train()
    bar = tqdm(
        total=cfg.train.steps,
        initial=start_step,
        disable=not progress or not ctx.is_main,
        desc=f"{cfg.method}",
        unit="step",
        dynamic_ncols=True,
    )
    window_start, window_images = time.perf_counter(), 0
    window = _WindowStats()
    run_counts: dict[str, float] = {}  # whole-run counters (``*_total``) as last logged, for the end summary
    init_share = ema_init_share(cfg, start_step)  # updated by each step's momentum below
    step = start_step
    board = open_tensorboard(cfg.train.tensorboard, run_dir, start_step) if ctx.is_main else None
    wandb_run = open_wandb(cfg, run_dir, resume) if ctx.is_main else None
    with (
        open(metrics_path, "a") if ctx.is_main else nullcontext() as metrics_file,
        closing(board) if board is not None else nullcontext(),  # flushed and closed even when a step fails
        wandb_run if wandb_run is not None else nullcontext(),  # finished (as failed, if a step raises) either way
    ):
        for step, batch in zip(range(start_step, cfg.train.steps), loader):
            lr, wd = lr_at(cfg, step), wd_at(cfg, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
                if group.get("apply_wd", True):
                    group["weight_decay"] = wd
            logging_step = step % cfg.train.log_every == 0 or step == cfg.train.steps - 1
            window.add(batch.pop("stats", {}))
            batch = to_device(batch, device)
            result = train_step(
                method,
                forward,
                optimizer,
                batch,
                step,
                accum_steps=cfg.train.accum_steps,
                clip=clip,
                autocast=autocast,
                diagnostics=logging_step,
            )
            if not result.finite:
                raise TrainingDiverged.at(step, result, latest if latest.exists() else None)
            init_share *= ema_at(cfg, step)
            window_images += cfg.train.batch_size
            bar.update(1)

            if logging_step:
                elapsed = time.perf_counter() - window_start
                logged = combine_over_ranks({k: as_float(v) for k, v in result.metrics.items()}, ctx)
                data_stats = combine_over_ranks(window.flush(), ctx, summed=COUNTER_SUFFIXES + ("_total",))
                _check_skipped(cfg, data_stats, (step + 1 - start_step) * cfg.train.batch_size, latest)
                run_counts = {k: v for k, v in data_stats.items() if k.endswith("_total")}
                monitored: dict[str, float] = {}
                if monitor is not None and (step % cfg.train.monitor_every == 0 or step == cfg.train.steps - 1):
                    # Monitors call submodules (method.encoder) outside the method's forward, where FSDP would
                    # gather the method's own parameters (patch embedding, norms): gather them here instead.
                    sharded = is_sharded(method)
                    if sharded:
                        method.unshard()
                    try:
                        monitored.update(monitor(method))
                        if online is not None:
                            monitored.update(online(method))
                    finally:
                        if sharded:
                            method.reshard()
                if ctx.is_main:  # every rank took part in the collectives above; one writes the log
                    record = {
                        "step": step,
                        **logged,
                        "lr": lr,
                        "wd": wd,
                        "grad_norm": float(result.grad_norm),
                        **result.grad_stats,
                        "img_per_s": window_images / max(elapsed, 1e-9),
                        **data_stats,
                    }
                    if method.has_ema_target:  # a method without an EMA target has no momentum to log
                        record.update(ema=ema_at(cfg, step), ema_init_share=init_share)  # after this step's update
                    record.update(monitored)
                    record["dead_zone"] = int(alarm.update(record))
                    metrics_file.write(json.dumps(record) + "\n")
                    metrics_file.flush()
                    if board is not None:
                        board.write(record)
                    if wandb_run is not None:
                        wandb_run.write(record)
                    bar.set_postfix(loss=f"{float(result.loss):.4f}", img_s=f"{record['img_per_s']:.0f}")
                window_start, window_images = time.perf_counter(), 0
            if cfg.train.ckpt_every and (step + 1) % cfg.train.ckpt_every == 0:
                save(step + 1)
    bar.close()
    final_step = step + 1 if cfg.train.steps > start_step else start_step
    save(final_step)
    if ctx.is_main:
        _log_counts(run_counts if cfg.train.steps > start_step else {})
    barrier(ctx)  # no rank returns (and reads the run folder) before rank 0 has written the last checkpoint
    return run_dir
