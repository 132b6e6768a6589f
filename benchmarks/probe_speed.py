"""Probe speed on cached features (issue #4's target: the full linear grid on 10k x 192 in seconds).

Run: .venv/bin/python benchmarks/probe_speed.py >> benchmarks/probe_speed.jsonl
Prints one JSON line with the machine, wall seconds per probe and the accuracies (synthetic Gaussian
classes, so the numbers only check that the probes work).
"""

from __future__ import annotations

import json
import os
import platform
import time

import torch

from tcjepa.eval.attentive import attentive_probe
from tcjepa.eval.knn import knn_probe
from tcjepa.eval.linear import DEFAULT_LRS, DEFAULT_WDS, linear_probe


def main() -> None:
    g = torch.Generator().manual_seed(0)
    n, n_val, d, c = 10_000, 2_000, 192, 10
    centres = torch.randn(c, d, generator=g)
    y, y_val = torch.randint(0, c, (n,), generator=g), torch.randint(0, c, (n_val,), generator=g)
    x = centres[y] + 2 * torch.randn(n, d, generator=g)
    x_val = centres[y_val] + 2 * torch.randn(n_val, d, generator=g)
    out = {
        "machine": f"{platform.machine()} CPU x{os.cpu_count()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "features": [n, d],
    }
    t = time.perf_counter()
    res = linear_probe(x, y, x_val, y_val, {"test": (x_val, y_val)}, c)
    out["linear_grid_s"] = time.perf_counter() - t
    out["linear_grid_heads"] = len(DEFAULT_LRS) * len(DEFAULT_WDS)
    out["linear_acc"] = res.test_acc["test"]
    t = time.perf_counter()
    knn = knn_probe(x, y, {"test": (x_val, y_val)}, c)
    out["knn_4k_s"] = time.perf_counter() - t
    out["knn20_acc"] = knn[20]["test"]
    patches = (x[:2000, None] + torch.randn(2000, 16, d, generator=g)).half()  # 16 patches per image
    t = time.perf_counter()
    att = attentive_probe(patches, y[:2000], patches[:500], y[:500], {}, c, epochs=5)
    out["attentive_2k_x16_5ep_s"] = time.perf_counter() - t
    out["attentive_val_acc"] = att.val_acc
    print(json.dumps(out))


if __name__ == "__main__":
    main()
