"""``tcjepa compare``: train every arm of a plan for K seeds at equal budget, evaluate each, write a report.

Layout under ``--out``: ``<arm>/seed<k>/`` is an ordinary run folder (config.yaml, metrics.jsonl,
checkpoints/, eval.json, eval.md of the EMA target encoder, and for JEPA methods eval_context.json,
eval_context.md of the context encoder); ``random-init/seed<k>/eval.json`` is the untrained floor;
``report.md``, ``report.json`` and the figures sit at the top. Seeds are the outer loop, so an
interrupted comparison already holds complete seeds; re-running the same command reuses finished runs
and evaluations, resumes interrupted runs, and never retrains what is done.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from ..config import Config, ConfigError
from ..eval.suite import SUITES, Suite, run_eval
from ..train.checkpoint import config_differences
from ..train.loop import TrainingDiverged, pretrain
from .runs import (
    checkpoint_step,
    eval_target,
    has_context_encoder,
    load_checked_config,
    load_run_method,
    untrained_target,
)
from .sweeps import Plan

log = logging.getLogger("tcjepa.compare")
FLOOR = "random-init"
FAILED = "FAILED.txt"
CONTEXT = "eval_context"  # file stem of the context-encoder evaluation beside eval.json


def train_or_reuse(cfg: Config, progress: bool) -> Path:
    """Train, resume an interrupted run, or reuse a finished one in ``cfg.run.dir``."""
    run_dir = Path(cfg.run.dir)
    step = checkpoint_step(run_dir)
    saved = run_dir / "config.yaml"
    if step is not None and saved.is_file():
        # A run trained under other settings (an edited preset, an old default) must not be reused under this
        # arm's name: its numbers would be reported for a configuration it never had.
        saved_cfg = yaml.safe_load(saved.read_text())
        diffs = config_differences(saved_cfg, cfg.to_dict())
        steps = saved_cfg.get("train", {}).get("steps")
        if steps != cfg.train.steps:  # resumable, but a run of another length is another arm
            diffs.append(f"train.steps: the run has {steps!r}, this arm has {cfg.train.steps!r}")
        if diffs:
            raise ConfigError(
                f"{run_dir} holds a run trained with other settings than this arm asks for:\n  "
                + "\n  ".join(diffs)
                + f"\nMove or delete {run_dir} to retrain it, or compare into another --out folder."
            )
    if step is not None and step >= cfg.train.steps:
        log.info("%s: reusing the finished run in %s (step %d)", cfg.method, run_dir, step)
        return run_dir
    if step is not None:
        log.info("%s: resuming the interrupted run in %s at step %d", cfg.method, run_dir, step)
    return pretrain(cfg, resume=step is not None, progress=progress)


def _eval_is_current(folder: Path, suite: str, step: int | None, stem: str = "eval") -> bool:
    path = folder / f"{stem}.json"
    if not path.is_file():
        return False
    try:
        saved = json.loads(path.read_text())["settings"]
    except (json.JSONDecodeError, KeyError):
        return False
    return saved["suite"]["name"] == suite and saved.get("step") == step


def arm_config(plan: Plan, arm, seed: int, out: Path, extra: list[str]) -> Config:
    overrides = [*plan.overrides, *arm.overrides, *extra, f"seed={seed}", f"run.dir={out / arm.slug / f'seed{seed}'}"]
    return load_checked_config(arm.config or plan.base, overrides)


def evaluate_run(run_dir: Path, suite: Suite, progress: bool) -> None:
    """Evaluate the target encoder and, for JEPA methods, the context encoder, unless already current."""
    step = checkpoint_step(run_dir)
    target = None
    if not _eval_is_current(run_dir, suite.name, step):
        target = eval_target(run_dir)
        run_eval(target, suite, out=run_dir, progress=progress)
    if _eval_is_current(run_dir, suite.name, step, CONTEXT):
        return
    method = target.method if target is not None else load_run_method(run_dir)[1]
    if has_context_encoder(method):
        run_eval(eval_target(run_dir, encoder="context"), suite, out=run_dir, progress=progress, stem=CONTEXT)


@dataclass(frozen=True)
class _Task:
    """One unit of a comparison: train (or reuse) and evaluate one arm of one seed, or evaluate a floor."""

    label: str
    seed: int
    cfg: Config
    floor_dir: Path | None = None  # set for the random-init floor: evaluate cfg's untrained encoder here


def _run_task(task: _Task, suite: Suite, progress: bool, threads: int = 0) -> float | None:
    """Seconds the task took, or None when its arm diverged (recorded in FAILED.txt) or failed before."""
    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    if task.floor_dir is not None:
        if not _eval_is_current(task.floor_dir, suite.name, None):
            run_eval(untrained_target(task.cfg, task.seed), suite, out=task.floor_dir, progress=progress)
        return time.perf_counter() - t0
    failed = Path(task.cfg.run.dir) / FAILED
    if failed.is_file():
        print(f"    skipped: {failed} records an earlier failure (delete the folder to retry)", flush=True)
        return None
    try:
        run_dir = train_or_reuse(task.cfg, progress)
    except TrainingDiverged as e:  # one diverging arm must not cost the others: record it, go on
        failed.parent.mkdir(parents=True, exist_ok=True)
        failed.write_text(f"{task.label}, seed {task.seed}\n{e}\n")
        log.error("%s, seed %d diverged; recorded in %s and left out of the report", task.label, task.seed, failed)
        return None
    evaluate_run(run_dir, suite, progress)
    return time.perf_counter() - t0


def _run_parallel(tasks: list[_Task], suite: Suite, jobs: int) -> dict[int, float | None]:
    """Run tasks in ``jobs`` worker processes, one torch thread each share of the cores; index -> seconds.

    Every run is still a pure function of its config (the data stream and the initialisation are seeded),
    so a run trained in a worker has the weights it would have in the main process; only wall time changes.
    Workers are spawned (not forked): torch's thread pools do not survive a fork.
    """
    threads = max(1, (os.cpu_count() or 1) // jobs)
    results: dict[int, float | None] = {}
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_run_task, t, suite, False, threads): i for i, t in enumerate(tasks)}
        for future in as_completed(futures):
            i = futures[future]
            results[i] = future.result()  # an unexpected error in a worker is raised here, not swallowed
            print(f"    done: {tasks[i].label}, seed {tasks[i].seed}", flush=True)
    return results


def run_compare(
    plan: Plan,
    seeds: int,
    out: str | Path,
    suite: str | Suite = "quick",
    extra: list[str] | None = None,
    progress: bool = True,
    command: str | None = None,
    only_seeds: list[int] | None = None,
    jobs: int = 1,
    merge_reports: list[str | Path] | None = None,
) -> Path:
    """Train and evaluate every (seed, arm); returns the path of report.md.

    ``only_seeds`` trains just those seeds; the report still covers every seed below ``seeds`` that is
    finished. ``jobs`` > 1 trains and evaluates that many arms at once in worker processes, splitting the
    cores between them: on a small CPU two runs side by side finish sooner than one after the other.
    ``merge_reports`` are earlier ``report.json`` files of the same sweep: the seeds they hold and ``out``
    lacks are reported from them and not trained again (:mod:`.imported`).
    """
    from .imported import load_report, supplied_seeds
    from .report import write_report

    if isinstance(suite, str):
        if suite not in SUITES:
            raise ValueError(f"unknown suite {suite!r}; choose one of {', '.join(SUITES)}")
        suite = SUITES[suite]
    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    extra = list(extra or [])
    # Validate every arm's config before training anything: a typo must not surface an hour in.
    cfgs = {(s, a.slug): arm_config(plan, a, s, out, extra) for s in range(seeds) for a in plan.arms}
    imports = [load_report(p, plan, cfgs, suite.name) for p in merge_reports or []]
    supplied = supplied_seeds(imports, seeds)
    tasks = []
    for seed in (s for s in range(seeds) if only_seeds is None or s in only_seeds):
        tasks += [_Task(a.label, seed, cfgs[(seed, a.slug)]) for a in plan.arms if (a.label, seed) not in supplied]
        if plan.floor and (FLOOR, seed) not in supplied:
            tasks.append(_Task(FLOOR, seed, cfgs[(seed, plan.arms[0].slug)], floor_dir=out / FLOOR / f"seed{seed}"))
    if supplied:
        print(f"{len(supplied)} (arm, seed) result(s) come from earlier report(s); not trained", flush=True)
    seconds: dict[int, float | None] = {}
    for i, task in enumerate(tasks):
        where = task.floor_dir or task.cfg.run.dir
        steps = "" if task.floor_dir else f": {task.cfg.train.steps} steps"
        print(f"[{i + 1}/{len(tasks)}] {task.label}, seed {task.seed}{steps} -> {where}", flush=True)
        if jobs == 1:
            seconds[i] = _run_task(task, suite, progress)
    if jobs > 1:
        seconds = _run_parallel(tasks, suite, jobs)
    timings: dict[str, list[float]] = {}
    for i, task in enumerate(tasks):
        if seconds.get(i) is not None and task.floor_dir is None:
            timings.setdefault(task.label, []).append(seconds[i])
    command = command or " ".join(["tcjepa", *sys.argv[1:]])
    return write_report(plan, seeds, out, cfgs, suite.name, command, timings, imports)
