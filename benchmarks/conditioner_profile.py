"""Where the `words` conditioner's time goes at `cpu-small` shapes: six conditioned predictor layers,
forward and backward, with and without the sparsity regularisers, then the top operators by self CPU time.

Shapes are those of a `cpu-small` batch: 64 images, 96 predictor tokens per image (4 target blocks of
~9 patches, each with its own copy of the ~15 context tokens), N = 8 captions of S = 12 word slots (~60%
real words), 384-d MiniLM word states, predictor width 96 with 3 heads. Usage:

    python benchmarks/conditioner_profile.py [--threads 1] [--profile]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from tcjepa.losses.sparsity import sparsity_losses
from tcjepa.models.conditioning.base import TextInputs
from tcjepa.models.conditioning.words import TextCrossAttention

B, T, N, S, D, TEXT_DIM, HEADS, LAYERS = 64, 96, 8, 12, 96, 384, 3, 6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="print the top operators by self CPU time")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    layers = [TextCrossAttention(D, TEXT_DIM, HEADS) for _ in range(LAYERS)]
    for layer in layers:
        torch.nn.init.normal_(layer.proj.weight, std=0.02)
    lengths = torch.randint(4, S + 1, (B, N, 1))
    text = TextInputs(torch.randn(B, N, S, TEXT_DIM), torch.arange(S) < lengths, torch.ones(B, N, dtype=torch.bool))
    x0 = torch.randn(B, T, D, requires_grad=True)

    def step(regularised: bool) -> None:
        x, outputs = x0, []
        for layer in layers:
            delta, out = layer(x, text)
            x = x + delta
            outputs.append(out)
        loss = x.square().mean()
        if regularised:
            sparse, consistency = sparsity_losses(outputs, text, "paper")
            loss = loss + sparse + consistency
        loss.backward()

    times: dict[str, list[float]] = {"with regularisers": [], "without": []}
    for r in range(args.repeats + 1):
        for name in times:
            t = time.perf_counter()
            step(name == "with regularisers")
            if r:  # the first round warms the allocator
                times[name].append(time.perf_counter() - t)
    print(f"real word slots: {float(text.valid.float().mean()):.2f}; threads: {args.threads}")
    for name, ts in times.items():
        print(f"forward + backward, {LAYERS} layers, {name}: {1000 * statistics.median(ts):.0f} ms (median)")
    if args.profile:
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            step(True)
        print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=20))


if __name__ == "__main__":
    main()
