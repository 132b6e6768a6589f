"""Shared fixtures: the tiny preset (32 px, 8x8 patch grid, hashed text encoder) and a tiny batch maker."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from tcjepa.config import Config, load_config

TINY = "configs/tiny.yaml"  # a shipped preset: resolved from any working directory


@pytest.fixture
def single_thread() -> Iterator[None]:
    """One intra-op thread for the tiny models, restored afterwards.

    The tiny models gain nothing from a second thread, and on a shared 2-core machine two OpenMP threads
    fighting another busy process make a training step 50x slower. Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("single_thread")``.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# A short but complete run: logging every step, monitors and checkpoints on, step_<N>.pt kept.
RUN_OVERRIDES = (
    "train.threads=1",
    "train.steps=20",
    "train.batch_size=8",
    "train.log_every=1",
    "train.ckpt_every=10",
    "train.keep_every=10",
    "train.monitor_every=5",
)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, Path]:
    """One 20-step TC-JEPA run of the tiny preset, shared by the tests that only read its outputs."""
    from tcjepa.train.loop import pretrain

    run_dir = tmp_path_factory.mktemp("trained") / "run"
    cfg = load_config(TINY, [f"run.dir={run_dir}", *RUN_OVERRIDES])
    before = torch.get_num_threads()
    try:
        assert pretrain(cfg, progress=False) == run_dir
    finally:
        torch.set_num_threads(before)
    return cfg, run_dir


@pytest.fixture
def run_overrides() -> tuple[str, ...]:
    """The overrides of :func:`trained_run`, to repeat (parts of) that run elsewhere."""
    return RUN_OVERRIDES


@pytest.fixture
def tiny_cfg(tmp_path: Path) -> Callable[..., Config]:
    """``tiny_cfg(*overrides)``: the tiny preset, its run folder in ``tmp_path``, one CPU thread."""

    def make(*overrides: str) -> Config:
        return load_config(TINY, [f"run.dir={tmp_path / 'run'}", "train.threads=1", *overrides])

    return make


def tiny_batch(
    batch_size: int = 2,
    context: int = 10,
    target: int = 4,
    num_targets: int = 2,
    grid: int = 8,
    image_size: int = 32,
    seed: int = 0,
) -> dict:
    """Images plus fixed-size masks (every image keeps ``context`` patches and predicts ``num_targets`` x
    ``target``), with disjoint context and target indices as the real sampler guarantees."""
    g = torch.Generator().manual_seed(seed)
    ctx, tgt = [], []
    for _ in range(batch_size):
        perm = torch.randperm(grid * grid, generator=g)
        ctx.append(perm[:context].sort().values)
        rest = perm[context:]
        tgt.append(torch.stack([rest[torch.randperm(len(rest), generator=g)[:target]] for _ in range(num_targets)]))
    return {
        "images": torch.rand(batch_size, 3, image_size, image_size, generator=g),
        "mask_context": torch.stack(ctx),
        "mask_targets": torch.stack(tgt),
    }


def with_text(
    batch: dict, captions: int = 3, words: int = 5, text_dim: int = 32, seed: int = 1, lengths: list | None = None
) -> dict:
    """``batch`` plus random word states; ``lengths[b][n]`` real words of caption n of image b (0 = absent)."""
    g = torch.Generator().manual_seed(seed)
    b = batch["images"].shape[0]
    if lengths is None:
        lengths = [[words - (i + n) % 3 for n in range(captions)] for i in range(b)]
    lens = torch.tensor(lengths)
    text_mask = torch.arange(words) < lens[..., None]
    return {
        **batch,
        "text": torch.randn(b, captions, words, text_dim, generator=g),
        "text_mask": text_mask,
        "caption_mask": lens > 0,
    }


@pytest.fixture
def make_batch() -> Callable[..., dict]:
    """:func:`tiny_batch` as a fixture."""
    return tiny_batch


@pytest.fixture
def add_text() -> Callable[..., dict]:
    """:func:`with_text` as a fixture."""
    return with_text


class NanGradient(torch.autograd.Function):
    """Identity forward, NaN backward: a finite loss whose gradient is not (for the finite-check tests)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


def torchrun_env() -> dict[str, str]:
    """The environment for running torchrun (or a script that calls it) on this checkout: its sources on
    PYTHONPATH, this interpreter's bin folder (its ``torchrun``) first on PATH, one OpenMP thread."""
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root / "src"), str(root), env.get("PYTHONPATH", "")])
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


def tiny_method_and_batch(method: str, *overrides: str):
    """(config, freshly built method, a 4-image batch with word states when it reads them) on the tiny
    preset with the sparsity warm-up off, seeded: the fixture of the one-step equality tests."""
    from tcjepa.methods import build_method

    cfg = load_config(TINY, [f"method={method}", "loss.sparse_warmup_steps=0", *overrides])
    torch.manual_seed(0)
    model = build_method(cfg, cfg.text.hashed_dim if method == "tcjepa" else None)
    batch = tiny_batch(batch_size=4)
    if method == "tcjepa":
        batch = with_text(batch, text_dim=cfg.text.hashed_dim)
    batch["step"] = 0
    return cfg, model, batch
