"""Caption store figures (benchmarks/caption-store.md): storage error and bytes per dtype, and the data path
of a training step with a warm store against the cold text-encoder path, in one process.

Run: PYTHONPATH=src .venv/bin/python benchmarks/caption_store.py [SCENES] [ROUNDS] > benchmarks/caption-store.json
Uses the real MiniLM encoder on the `shapes` captions of the first SCENES (default 256) training scenes of the
`cpu-small` preset. The step-time arms are interleaved (round-robin, ROUNDS rounds) because the machine is shared.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from tcjepa.app.bench import loop_step
from tcjepa.app.embed_captions import dataset_sentences
from tcjepa.config import load_config
from tcjepa.data.batch import text_spec
from tcjepa.data.caption_store import CaptionStore, build_store
from tcjepa.data.state_codec import to_storage
from tcjepa.data.stream import PretrainStream
from tcjepa.methods import build_method


def errors(store: CaptionStore, ref: CaptionStore, sentences: list[str], as_trained: bool) -> dict:
    """Max abs and relative RMS error of ``store`` against the exact fp32 states, over every stored value."""
    worst, sq_err, sq_ref = 0.0, 0.0, 0.0
    for s in sentences:
        exact, got = ref.get(s), store.get(s)
        if as_trained:  # the memory cache rounds what it holds to fp16, whatever the store's dtype
            got = to_storage(got).float()
        diff = (got - exact).double()
        worst = max(worst, float(diff.abs().max())) if diff.numel() else worst
        sq_err += float((diff**2).sum())
        sq_ref += float((exact.double() ** 2).sum())
    return {"max_abs": worst, "rel_rms": (sq_err / sq_ref) ** 0.5}


def main() -> None:
    scenes = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    steps = scenes // 64
    base = ["method=tcjepa", f"data.train_size={scenes}", "data.num_workers=0", "train.batch_size=64"]
    cfg = load_config("cpu-small", base)
    sentences, _ = dataset_sentences(cfg, ["train"])
    root = Path(tempfile.mkdtemp(prefix="caption-store-"))
    out: dict = {
        "machine": f"{platform.machine()} CPU x{os.cpu_count()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
        "scenes": scenes,
        "sentences": len(sentences),
        "dtypes": {},
    }
    from tcjepa.models.text import build_text_encoder

    encoder = build_text_encoder("minilm")
    stores = {}
    for dtype in ("fp32", "fp16", "int8"):
        summary = build_store(encoder, sentences, root / dtype, dtype)
        stores[dtype] = CaptionStore(root / dtype)
        on_disk = sum(f.stat().st_size for f in (root / dtype).iterdir())
        out["dtypes"][dtype] = {
            "build_s": summary["seconds"],
            "tokens": summary["store_tokens"],
            "bytes_per_token": summary["store_bytes"] / summary["store_tokens"],
            "disk_bytes_per_token": on_disk / summary["store_tokens"],  # with padding, index and meta
        }
    for dtype in ("fp16", "int8"):
        out["dtypes"][dtype]["error_vs_fp32"] = errors(stores[dtype], stores["fp32"], sentences, False)
        out["dtypes"][dtype]["error_vs_fp32_as_trained"] = errors(stores[dtype], stores["fp32"], sentences, True)
    out["dtypes"]["fp32"]["error_vs_fp32_as_trained"] = errors(stores["fp32"], stores["fp32"], sentences, True)

    # Data path per step: a fresh stream (cold memory cache) per arm and round, so the cold arm encodes every
    # sentence it meets for the first time, as a new run or a new worker process does; the store arm reads.
    arms = {"cold_encoder": cfg, "warm_store": load_config("cpu-small", [*base, f"text.store={root / 'fp16'}"])}
    data_ms: dict[str, list[float]] = {a: [] for a in arms}
    train_ms: list[float] = []
    torch.manual_seed(0)
    method = build_method(cfg)
    opt = torch.optim.AdamW(method.param_groups(), lr=cfg.optim.lr)
    batch = None
    for _ in range(rounds):
        for arm, arm_cfg in arms.items():
            stream = PretrainStream(arm_cfg, text_spec(arm_cfg))
            stream.cache  # noqa: B018 (load the encoder and open the store outside the timing)
            for step in range(steps):
                t0 = time.perf_counter()
                batch = stream[step]
                data_ms[arm].append(1000 * (time.perf_counter() - t0))
            if arm == "warm_store":
                assert stream.cache.stats["store_misses"] == 0, stream.cache.stats
        batch.pop("stats", None)
        for i in range(2):
            t0 = time.perf_counter()
            loop_step(cfg, method, opt, batch, i)
            train_ms.append(1000 * (time.perf_counter() - t0))
    med = {a: statistics.median(v) for a, v in data_ms.items()}
    train = statistics.median(train_ms[1:])  # the first step warms the allocator
    out["step"] = {
        "data_ms_median": med,
        "train_step_ms_median": train,
        "data_ratio_cold_over_store": med["cold_encoder"] / med["warm_store"],
        "serial_step_ratio_cold_over_store": (train + med["cold_encoder"]) / (train + med["warm_store"]),
        "rounds": rounds,
        "steps_per_arm_round": steps,
        "batch_size": 64,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
