"""``tcjepa data ...``: the dataset tools' command-line handlers and their parser (preview, validate,
convert, embed-captions); ``cli.py`` mounts them under the ``data`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


def cmd_data_preview(args: argparse.Namespace) -> int:
    from ..data.shapes import save_preview
    from ..data.sources import scene_dataset

    ds = scene_dataset(args.name, args.split, args.image_size, max(args.n, 1), args.seed)
    path = save_preview(args.out or f"{args.name}_preview.png", ds, n=args.n, captions_per_image=args.captions)
    print(f"wrote {path}")
    return 0


def cmd_data_validate(args: argparse.Namespace) -> int:
    from .data_tools import run_validate

    return run_validate(args.path, args.format, args.json, args.max_error_rate, progress=not args.no_progress)


def cmd_data_embed_captions(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..data.caption_store import StoreError
    from ..data.sources import check_data_config
    from ..methods import check_config
    from .embed_captions import embed_captions, format_summary

    cfg = load_config(args.config, args.overrides)  # not load_checked_config: text.store may be what we build
    check_config(cfg)
    check_data_config(cfg)
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    try:
        summary = embed_captions(
            cfg, args.out, args.dtype or cfg.text.cache_dtype, splits, args.shard_mb, progress=not args.no_progress
        )
    except StoreError as e:  # a store built otherwise, damaged, or being written: the message says what to do
        print(f"tcjepa: error: {e}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0


def cmd_data_convert(args: argparse.Namespace) -> int:
    from .convert import run_convert

    return run_convert(args.src, args.out, args.format, args.shard_size, args.resume, progress=not args.no_progress)


def add_data_commands(
    sub: argparse._SubParsersAction, add_overrides: Callable[[argparse.ArgumentParser], None]
) -> None:
    """The ``data`` command and its actions, on the top-level parser's subcommands ``sub``."""
    data = sub.add_parser("data", help="inspect datasets").add_subparsers(dest="action", required=True)
    p = data.add_parser("preview", help="a PNG grid of generated scenes (shapes, fashion-scenes) with their captions")
    p.add_argument("--split", default="train")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--captions", type=int, default=None, help="captions shown per image (default all)")
    p.add_argument("--name", default="shapes", choices=["shapes", "fashion-scenes"], help="which generated scenes")
    p.add_argument("--out", default=None, help="PNG path (default <name>_preview.png)")
    p.set_defaults(func=cmd_data_preview)
    p = data.add_parser(
        "validate", help="check an image-caption folder (jsonl), COCO captions file or tar shards; exit 1 if bad"
    )
    p.add_argument(
        "path", help="a .jsonl file, a folder holding captions.jsonl, a COCO captions_*.json, or shards-{0..9}.tar"
    )
    p.add_argument(
        "--format",
        choices=["jsonl", "coco", "webdataset"],
        help="default: webdataset for .tar patterns, coco for a .json file, else jsonl",
    )
    p.add_argument("--json", metavar="OUT", help="also write the summary as JSON")
    p.add_argument("--max-error-rate", type=float, default=0.01, help="exit 1 above this share of bad entries")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_data_validate)
    p = data.add_parser(
        "embed-captions",
        help="pre-compute the frozen text encoder's word states of a dataset's sentences into a store (text.store)",
        description="Encode every distinct caption sentence of the configured dataset's splits once and write the "
        "word states into memory-mapped shards; train with text.store=STORE. Resumable: a re-run skips "
        "what is stored. Generated datasets (shapes, fashion-scenes) are bounded here: the train split has "
        "data.train_size scenes, the others their default size.",
    )
    p.add_argument("config", help="YAML preset or path, as for pretrain")
    add_overrides(p)
    p.add_argument("--out", required=True, metavar="STORE", help="store folder (created, or completed if it exists)")
    p.add_argument("--dtype", choices=["fp16", "int8", "fp32"], help="storage precision (default: text.cache_dtype)")
    p.add_argument("--splits", default="train,val", help="comma-separated splits to cover (default train,val)")
    p.add_argument("--shard-mb", type=float, default=64, help="shard size; a kill loses at most one shard's work")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_data_embed_captions)
    p = data.add_parser("convert", help="write an image-caption folder (jsonl) or COCO file as WebDataset tar shards")
    p.add_argument("src", help="a .jsonl file, a folder holding captions.jsonl, or a COCO captions_*.json")
    p.add_argument("--out", required=True, help="folder for shard-NNNNNN.tar, manifest.json and convert.json")
    p.add_argument("--format", choices=["jsonl", "coco"], help="default: coco for a .json file, else jsonl")
    p.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default 1000)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted conversion into --out")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_data_convert)
