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
import sys
import time
from pathlib import Path

import yaml

from ..config import Config, ConfigError, load_config
from ..eval.suite import SUITES, Suite, run_eval
from ..train.checkpoint import config_differences
from ..train.loop import TrainingDiverged, pretrain
from .runs import checkpoint_step, eval_target, has_context_encoder, load_run_method, untrained_target
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
    return load_config(arm.config or plan.base, overrides)


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


def run_compare(
    plan: Plan,
    seeds: int,
    out: str | Path,
    suite: str | Suite = "quick",
    extra: list[str] | None = None,
    progress: bool = True,
    command: str | None = None,
    only_seeds: list[int] | None = None,
) -> Path:
    """Train and evaluate every (seed, arm); returns the path of report.md.

    ``only_seeds`` trains just those seeds (e.g. one per process, to use several cores); the report still
    covers every seed below ``seeds`` that is finished.
    """
    from .report import write_report

    if isinstance(suite, str):
        if suite not in SUITES:
            raise ValueError(f"unknown suite {suite!r}; choose one of {', '.join(SUITES)}")
        suite = SUITES[suite]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    extra = list(extra or [])
    # Validate every arm's config before training anything: a typo must not surface an hour in.
    cfgs = {(s, a.slug): arm_config(plan, a, s, out, extra) for s in range(seeds) for a in plan.arms}
    timings: dict[str, list[float]] = {}
    todo = [s for s in range(seeds) if only_seeds is None or s in only_seeds]
    total = len(todo) * (len(plan.arms) + plan.floor)
    done = 0
    for seed in todo:
        for arm in plan.arms:
            cfg = cfgs[(seed, arm.slug)]
            done += 1
            print(f"[{done}/{total}] {arm.label}, seed {seed}: {cfg.train.steps} steps -> {cfg.run.dir}", flush=True)
            t0 = time.perf_counter()
            failed = Path(cfg.run.dir) / FAILED
            if failed.is_file():
                print(f"    skipped: {failed} records an earlier failure (delete the folder to retry)", flush=True)
                continue
            try:
                run_dir = train_or_reuse(cfg, progress)
            except TrainingDiverged as e:  # one diverging arm must not cost the others: record it, go on
                failed.parent.mkdir(parents=True, exist_ok=True)
                failed.write_text(f"{arm.label}, seed {seed}\n{e}\n")
                log.error("%s, seed %d diverged; recorded in %s and left out of the report", arm.label, seed, failed)
                continue
            evaluate_run(run_dir, suite, progress)
            timings.setdefault(arm.label, []).append(time.perf_counter() - t0)
        if plan.floor:
            done += 1
            folder = out / FLOOR / f"seed{seed}"
            print(f"[{done}/{total}] {FLOOR}, seed {seed}", flush=True)
            if not _eval_is_current(folder, suite.name, None):
                base = cfgs[(seed, plan.arms[0].slug)]
                run_eval(untrained_target(base, seed), suite, out=folder, progress=progress)
    command = command or " ".join(["tcjepa", *sys.argv[1:]])
    return write_report(plan, seeds, out, cfgs, suite.name, command, timings)
