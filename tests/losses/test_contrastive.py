"""CLIP and SigLIP losses: the textbook formulas, captionless pairs left out, and 2 ranks = 1 process."""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from tcjepa.losses.contrastive import clip_loss, siglip_loss
from tcjepa.methods.contrastive import LogitScale

B, E, DIN = 8, 6, 5


def _features(seed: int = 0, b: int = B) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(b, E, generator=g), dim=1), F.normalize(torch.randn(b, E, generator=g), dim=1)


def _naive_clip(img, txt, scale):
    logits = scale * img @ txt.T
    labels = torch.arange(len(img))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def _naive_siglip(img, txt, scale, bias):
    logits = scale * img @ txt.T + bias
    signs = 2 * torch.eye(len(img)) - 1
    return -F.logsigmoid(signs * logits).sum() / len(img)


def test_clip_is_symmetric_infonce_with_a_clipped_scale() -> None:
    img, txt = _features()
    valid = torch.ones(B, dtype=torch.bool)
    loss, report = clip_loss(img, txt, valid, torch.tensor([math.log(1 / 0.07)]))
    torch.testing.assert_close(loss, _naive_clip(img, txt, 1 / 0.07))
    assert report["pairs"] == B and 0 <= report["i2t_acc"] <= 1
    big, _ = clip_loss(img, txt, valid, torch.tensor([math.log(1e4)]))  # the scale stops at 100
    torch.testing.assert_close(big, _naive_clip(img, txt, 100.0))


def test_siglip_is_the_pairwise_sigmoid_loss() -> None:
    img, txt = _features()
    valid = torch.ones(B, dtype=torch.bool)
    loss, _ = siglip_loss(img, txt, valid, torch.tensor([math.log(10.0)]), torch.tensor([-10.0]))
    torch.testing.assert_close(loss, _naive_siglip(img, txt, 10.0, -10.0))


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_pairs_without_a_caption_are_left_out(kind: str) -> None:
    img, txt = _features()
    valid = torch.tensor([True, False, True, True, False, True, True, True])
    txt = txt.clone()
    txt[~valid] = float("nan")  # whatever the head made of an empty caption must not reach the loss
    scale = torch.tensor([2.0])
    if kind == "clip":
        loss, _ = clip_loss(img, txt, valid, scale)
        expected = _naive_clip(img[valid], txt[valid], math.exp(2.0))
    else:
        loss, _ = siglip_loss(img, txt, valid, scale, torch.tensor([-1.0]))
        expected = _naive_siglip(img[valid], txt[valid], math.exp(2.0), -1.0)
    torch.testing.assert_close(loss, expected)


class _Towers(nn.Module):
    """A stand-in for the two towers: linear maps to a shared space plus the learnable scale (and bias)."""

    def __init__(self, kind: str):
        super().__init__()
        torch.manual_seed(0)
        self.kind = kind
        self.img = nn.Linear(DIN, E)
        self.txt = nn.Linear(DIN, E)
        self.logit = LogitScale(1.0, -2.0 if kind == "siglip" else None)

    def forward(self, x_img, x_txt, valid):
        img, txt = F.normalize(self.img(x_img), dim=1), F.normalize(self.txt(x_txt), dim=1)
        if self.kind == "clip":
            return clip_loss(img, txt, valid, self.logit.log_scale)[0]
        return siglip_loss(img, txt, valid, self.logit.log_scale, self.logit.bias)[0]


def _global_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    # Ranks hold different numbers of captioned pairs (3 and 4), so n must be counted over both.
    valid = torch.tensor([True, False, True, True, True, True, True, True])
    return torch.randn(B, DIN, generator=g), torch.randn(B, DIN, generator=g), valid


def _one_process(kind: str) -> tuple[float, dict[str, torch.Tensor]]:
    model = _Towers(kind)
    loss = model(*_global_batch())
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters()}


def _rank_main(rank: int, world: int, port: int, kind: str, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = DistributedDataParallel(_Towers(kind))
        rows = slice(rank * B // world, (rank + 1) * B // world)
        x_img, x_txt, valid = _global_batch()
        loss = model(x_img[rows], x_txt[rows], valid[rows])
        loss.backward()  # DDP averages the gradients over the ranks
        logged = loss.detach().clone()
        dist.all_reduce(logged)  # the loop logs the mean over ranks
        grads = {n.removeprefix("module."): p.grad.clone() for n, p in model.named_parameters()}
        torch.save({"loss": float(logged) / world, "grads": grads}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_two_ranks_under_ddp_give_the_one_process_loss_and_gradients(tmp_path: Path, kind: str) -> None:
    """Features gathered with their gradient, each rank's rows scaled by W: DDP's average is the global gradient."""
    loss, grads = _one_process(kind)
    mp.spawn(_rank_main, args=(2, _free_port(), kind, str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got["loss"] == pytest.approx(loss, abs=1e-5)
        assert got["grads"].keys() == grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(got["grads"][name], grad, atol=1e-5, rtol=1e-5, msg=name)
    assert any(g.abs().sum() > 0 for g in grads.values())
