"""Fingerprint of a short tiny-preset run per method: every logged loss and a hash of the final weights.

Refactors that must not change what trains (moves, new seams) are checked by running this before and after
and diffing the two JSON files: equal losses at every step and equal weight hashes mean bit for bit the
same training. Usage: ``python scripts/loss_fingerprint.py OUT.json [key=value ...]``.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch

from tcjepa.config import load_config
from tcjepa.train.checkpoint import load_checkpoint
from tcjepa.train.loop import pretrain

LOSS_KEYS = ("loss", "loss_pred", "loss_sparse", "loss_consistency")


def weights_sha256(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def fingerprint(method: str, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [
            f"method={method}",
            "train.steps=20",
            "train.log_every=1",
            "train.threads=1",
            "train.monitor_every=0",
            f"run.dir={tmp}/run",
            *extra,
        ]
        run = pretrain(load_config("tiny", overrides), progress=False)
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        state = load_checkpoint(run / "checkpoints" / "latest.pt")
    return {
        "losses": {k: [r[k] for r in records if k in r] for k in LOSS_KEYS},
        "weights_sha256": weights_sha256(state["method"]),
    }


def main() -> None:
    out, extra = Path(sys.argv[1]), sys.argv[2:]
    result = {m: fingerprint(m, extra) for m in ("ijepa", "tcjepa")}
    out.write_text(json.dumps(result, indent=1) + "\n")
    print({m: r["weights_sha256"][:16] for m, r in result.items()})


if __name__ == "__main__":
    main()
