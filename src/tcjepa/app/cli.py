"""``tcjepa <command>``: the stable command-line names of docs/design.md §5."""

from __future__ import annotations

import os

# Before torch loads OpenMP: busy-waiting threads fight the data worker on small machines, which made
# identical steps vary 20x on 2 cores. Users can still override it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from ..config import Config, ConfigError, all_keys  # noqa: E402
from .cli_data import add_data_commands  # noqa: E402

log = logging.getLogger("tcjepa")


def _add_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. train.steps=100")


def _config(args: argparse.Namespace) -> Config:
    from .runs import load_checked_config

    return load_checked_config(args.config, args.overrides)


def cmd_pretrain(args: argparse.Namespace) -> int:
    # Under torchrun, a rank's exception is written to torchrun's error file, so the job's failure summary names
    # it (rank, message, traceback) rather than a bare exit code.
    if not os.environ.get("TORCHELASTIC_ERROR_FILE"):
        return _pretrain_command(args)
    from torch.distributed.elastic.multiprocessing.errors import record

    return record(_pretrain_command)(args)


def _pretrain_command(args: argparse.Namespace) -> int:
    from ..train.loop import pretrain

    cfg = _config(args)
    run_dir = pretrain(
        cfg, resume=args.resume, progress=not args.no_progress, allow_schedule_change=args.allow_schedule_change
    )
    if os.environ.get("RANK", "0") in ("", "0"):  # under torchrun, one line for the job, not one per process
        print(f"run written to {run_dir}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from ..methods import METHODS
    from .bench import run_bench

    cfg = _config(args)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        if m not in METHODS:
            raise ConfigError(f"--methods: unknown method {m!r}; choose from {', '.join(METHODS)}")
    out = open(args.out, "a") if args.out else None  # noqa: SIM115

    def emit(record: dict) -> None:
        line = json.dumps(record)
        print(line, flush=True)
        if out:
            out.write(line + "\n")

    try:
        if args.data_only:
            from .bench_data import run_data_bench

            emit(run_data_bench(cfg, steps=args.steps))
        else:
            run_bench(cfg, methods, steps=args.steps, rounds=args.rounds, flops_only=args.flops_only, emit=emit)
    finally:
        if out:
            out.close()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    report = run_demo(Path(args.out), quick=args.quick, progress=not args.no_progress, jobs=args.jobs)
    print(f"demo report: {report}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import run_compare
    from .sweeps import load_sweep, plan_from_configs

    configs = [c for c in args.configs if "=" not in c]
    overrides = [c for c in args.configs if "=" in c]
    if args.sweep and configs:
        raise ConfigError("compare: give either --sweep NAME or config files, not both")
    if not args.sweep and not configs:
        raise ConfigError("compare: give config files (one arm each) or --sweep NAME (methods, masks, captions, ...)")
    plan = load_sweep(args.sweep) if args.sweep else plan_from_configs(configs)
    if args.base:
        plan.base = args.base
    out = Path(args.out or f"runs/compare-{plan.name}")
    only = [int(s) for s in args.only_seeds.split(",")] if args.only_seeds else None
    report = run_compare(
        plan,
        args.seeds,
        out,
        suite=args.suite,
        extra=overrides,
        progress=not args.no_progress,
        only_seeds=only,
        jobs=args.jobs,
        merge_reports=args.merge_report,
    )
    print(f"report: {report}")
    return 0


def cmd_viz(args: argparse.Namespace) -> int:
    from ..methods import method_class
    from .runs import load_run_config
    from .viz import masks_and_errors, word_maps

    out = Path(args.out or Path(args.run) / "viz")
    written = [masks_and_errors([args.run, *args.compare], args.images, out)]
    cfg = load_run_config(args.run)
    if method_class(cfg.method).grounded_for(cfg):
        written += word_maps(args.run, args.images, out, captions_per_image=args.captions, raw=args.raw)
    for path in written:
        print(f"wrote {path}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ..eval.suite import run_eval
    from .runs import eval_target

    try:
        target = eval_target(args.target, encoder=args.encoder)
    except ValueError as e:  # e.g. --encoder context on an exported encoder: a message for a person
        print(f"tcjepa: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(args.target)
    stem = "eval" if args.encoder == "target" else f"eval_{args.encoder}"  # never overwrite the target's eval.json
    result = run_eval(
        target, args.suite, out, last4=args.last4, device=args.device, progress=not args.no_progress, stem=stem
    )
    print(f"wrote {out / f'{stem}.json'} and {out / f'{stem}.md'} ({result['settings']['seconds']} s)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .runs import export_run

    out = export_run(args.run, args.out)
    which = (
        "context encoder (frozen-teacher run)"
        if "frozen_teacher" in json.loads((out / "config.json").read_text())
        else "EMA target encoder"
    )
    print(f"exported the {which} of {args.run} to {out}")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from .embed import embed_images

    try:
        path = embed_images(
            args.encoder, args.images, args.out, args.patches, args.batch_size, progress=not args.no_progress
        )
    except ValueError as e:  # an unreadable image, a malformed source, an output it cannot write
        print(f"tcjepa: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from ..eval.suite import SUITES

    parser = argparse.ArgumentParser(prog="tcjepa", description="Text-Conditional JEPA and I-JEPA in plain PyTorch")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--help-config", action="store_true", help="list every config key with its default and exit")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("pretrain", help="train a method (ijepa|tcjepa) from a YAML config")
    p.add_argument("config", help="YAML preset, e.g. configs/demo.yaml")
    _add_overrides(p)
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in run.dir from checkpoints/latest.pt (latest.dcp when sharded)",
    )
    p.add_argument(
        "--allow-schedule-change",
        action="store_true",
        help="with --resume: accept a changed train.steps (the lr, wd and EMA schedules then change mid-run)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("bench", help="step time, img/s, peak memory and FLOPs per method (JSON lines)")
    p.add_argument("config")
    _add_overrides(p)
    p.add_argument("--methods", default="ijepa,tcjepa")
    p.add_argument("--steps", type=int, default=10, help="timed steps per method per round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median over all timed steps)")
    p.add_argument("--flops-only", action="store_true", help="print analytic FLOPs without training")
    p.add_argument(
        "--data-only", action="store_true", help="time the loader alone (config's method and data.num_workers)"
    )
    p.add_argument("--out", help="also append the JSON lines to this file")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("demo", help="the CPU demo: pretrain TC-JEPA and I-JEPA briefly, evaluate, write a report")
    p.add_argument("--out", default="runs/demo", help="folder for the runs and the report")
    p.add_argument("--quick", action="store_true", help="a much shorter run (a smoke test, not a result)")
    p.add_argument(
        "--jobs", type=int, default=min(2, os.cpu_count() or 1), help="runs trained side by side (default: 2 cores)"
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("compare", help="train arms for K seeds at equal budget, evaluate, write report.md/json + plots")
    p.add_argument(
        "configs",
        nargs="*",
        metavar="CONFIG_OR_key=value",
        help="config files (one arm each) and/or key=value overrides applied to every arm",
    )
    p.add_argument("--sweep", help="a shipped sweep (methods, masks, captions, sparsity, demo) or a sweep YAML")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--jobs", type=int, default=1, help="arms trained side by side, each on its share of the cores")
    p.add_argument("--only-seeds", help="train just these seeds, e.g. 1,2 (one process per core); report all")
    p.add_argument("--base", help="replace the sweep's base preset (e.g. --base demo for a shorter run)")
    p.add_argument(
        "--merge-report",
        action="append",
        default=[],
        metavar="REPORT_JSON",
        help="an earlier report.json of this sweep (same settings): its seeds that --out lacks are reported, "
        "not retrained; repeatable",
    )
    p.add_argument("--out", help="output folder (default runs/compare-<sweep>)")
    p.add_argument("--suite", default="quick", choices=list(SUITES))
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("viz", help="patch-word maps, masks and prediction-error maps as PNG")
    p.add_argument("run", help="a run folder (word maps need a TC-JEPA run)")
    p.add_argument("--compare", nargs="*", default=[], metavar="RUN", help="other runs for the error maps")
    p.add_argument("--images", nargs="+", type=int, default=[0, 1, 2, 3], help="test-scene indices")
    p.add_argument("--captions", type=int, default=3, help="captions per image in the word maps")
    p.add_argument(
        "--raw",
        action="store_true",
        help="also draw raw (unrectified) cosines, each panel on its own scale: what the pointing game ranks, "
        "and the only informative maps for a run whose rectified cosines are all zero",
    )
    p.add_argument("--out", help="output folder (default RUN/viz)")
    p.set_defaults(func=cmd_viz)

    p = sub.add_parser("eval", help="frozen-encoder evaluation of a run or exported encoder -> eval.json, eval.md")
    p.add_argument("target", metavar="RUN_OR_ENCODER", help="a run folder or an exported encoder folder")
    p.add_argument("--suite", default="quick", choices=list(SUITES))
    p.add_argument("--out", help="folder for eval.json and eval.md (default: the target folder)")
    p.add_argument(
        "--encoder",
        default="target",
        choices=["target", "context"],
        help="target: the EMA target encoder (default; eval.json/md); context: the run's context encoder, "
        "written to eval_context.json/md (grounding always uses the context encoder + predictor). A run "
        "trained against a frozen teacher (model.target=frozen:PATH) is evaluated on its context encoder either way",
    )
    p.add_argument("--last4", action="store_true", help="concatenate the last 4 blocks' average pools (I-JEPA)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("export", help="write a run's encoder as model.safetensors + config.json")
    p.add_argument("run")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("embed", help="features of image files or a captioned source from an encoder or a run")
    p.add_argument("encoder", help="exported encoder folder or run folder")
    p.add_argument(
        "images", nargs="+", help="image files, or one source: a .jsonl / folder with captions.jsonl / COCO .json"
    )
    p.add_argument(
        "--out",
        default="embeddings.pt",
        help=".pt (pooled, ids, patches), .npy (+ .ids.txt) or .parquet (id, features)",
    )
    p.add_argument("--patches", action="store_true", help="also store patch features (.pt only)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_embed)

    add_data_commands(sub, _add_overrides)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may come after options (``bench CFG --steps 5 train.steps=9``): argparse leaves those over.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    level = logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.help_config:
        defaults = Config().to_dict()
        for key in all_keys():
            value = defaults
            for part in key.split("."):
                value = value[part]
            print(f"{key} = {value!r}")
        return 0
    if not args.command:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError) as e:
        print(f"tcjepa: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        if type(e).__name__ == "BadSample":  # tcjepa.data.decode's: a file named with what is wrong with it
            print(f"tcjepa: error: {e}", file=sys.stderr)
            return 1
        raise
    except KeyboardInterrupt:
        print("tcjepa: interrupted; the last checkpoint is intact (use --resume to continue)", file=sys.stderr)
        return 130
    except RuntimeError as e:
        # CheckpointError, TrainingDiverged and other failures that carry a message meant for a person.
        if type(e).__name__ in ("CheckpointError", "TrainingDiverged", "TooManySkipped"):
            print(f"tcjepa: error: {e}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
