"""The analytic FLOP count equals what torch's FlopCounterMode measures on a real training step.

FlopCounterMode has no formula for the CPU flash-attention kernel that ``scaled_dot_product_attention``
picks by default (it would silently count attention as 0), so the step runs on the math backend, where
attention is plain batched matmuls that the counter does see.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from tcjepa import flops
from tcjepa.data.captions import text_dim_for
from tcjepa.data.stream import PretrainStream
from tcjepa.methods import build_method

pytestmark = pytest.mark.usefixtures("single_thread")


def _shapes(method, batch: dict) -> flops.Shapes:
    cfg, spec = method.cfg, method.context_encoder.spec
    p = cfg.model.predictor
    _, m, kt = batch["mask_targets"].shape
    n = s = dt = 0
    real_words = None
    if "text" in batch:
        b, n, s, dt = batch["text"].shape
        valid = batch["text_mask"].bool() & batch["caption_mask"].bool()[..., None]
        real_words = float(valid.sum()) / (b * n)  # the words conditioner projects only the real words
    return flops.Shapes.of(
        spec,
        p.dim,
        p.depth,
        context=batch["mask_context"].shape[1],
        target=kt,
        num_targets=m,
        captions=n,
        words=s,
        real_words=real_words,
        text_dim=dt,
        cond_layers=sum(block.cond is not None for block in method.predictor.blocks) or None,
        conditioning=p.conditioning if n else "none",
        fusion=p.caption_fusion,
    )


def _setup(tiny_cfg, method_name: str, *overrides: str):
    cfg = tiny_cfg(f"method={method_name}", "train.batch_size=3", *overrides)
    torch.manual_seed(0)
    method = build_method(cfg, text_dim_for(cfg) if method_name == "tcjepa" else None)
    batch = PretrainStream(cfg, method.batch_spec(cfg))[0]
    batch.pop("stats")
    return method, batch


VARIANTS = [
    (f"model.predictor.conditioning={c}", "loss.sparse_form=none") for c in ("caption", "adaln", "input", "sequence")
]
CASES = [
    ("ijepa", ()),
    ("tcjepa", ()),
    ("tcjepa", ("model.predictor.cond_heads=4", "text.num_captions=3")),
    ("tcjepa", ("model.predictor.caption_fusion=attention",)),
    ("tcjepa", ("model.predictor.caption_fusion=mean", "model.predictor.cond_layers=last")),
    *[("tcjepa", v) for v in VARIANTS],
    ("tcjepa", ("model.predictor.conditioning=adaln", "loss.sparse_form=none", "model.predictor.cond_layers=last")),
]


@pytest.mark.parametrize(
    ("method_name", "overrides"), CASES, ids=[" ".join((n, *(o.split(".")[-1] for o in ov))) for n, ov in CASES]
)
def test_training_step_matches_flop_counter(tiny_cfg, method_name: str, overrides: tuple[str, ...]) -> None:
    method, batch = _setup(tiny_cfg, method_name, *overrides)
    b = batch["images"].shape[0]
    shapes = _shapes(method, batch)
    if method_name == "tcjepa":
        assert shapes.captions >= 3 and shapes.words > 1  # the text path really is counted
    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel(SDPBackend.MATH):
        loss = method(batch).loss
        loss.backward()
    measured = counter.get_total_flops()
    analytic = flops.training_step(shapes)
    assert b * analytic["total"] == measured, {k: b * v for k, v in analytic.items()}
    assert analytic["total"] == pytest.approx(
        analytic["context_encoder"] + analytic["target_encoder"] + analytic["predictor"] + analytic["conditioner"]
    )
    if method_name == "ijepa":
        assert analytic["conditioner"] == 0
    else:
        assert analytic["conditioner"] > 0


def test_forward_parts_match_per_module_counts(tiny_cfg) -> None:
    method, batch = _setup(tiny_cfg, "tcjepa")
    b = batch["images"].shape[0]
    shapes = _shapes(method, batch)
    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel(SDPBackend.MATH), torch.no_grad():
        method(batch)
    per_module = {name: sum(c.values()) for name, c in counter.get_flop_counts().items()}
    tgt = flops.encoder_forward(shapes, shapes.num_patches)
    ctx = flops.encoder_forward(shapes, shapes.context)
    pred = flops.predictor_forward(shapes)
    cond = sum(flops.conditioner_forward(shapes).values())
    assert per_module["TCJEPA.target_encoder"] == b * sum(tgt.values())
    assert per_module["TCJEPA.context_encoder.patch_embed"] == b * ctx["patch_embed"]
    assert per_module["TCJEPA.context_encoder"] == b * sum(ctx.values())
    assert per_module["TCJEPA.predictor.embed"] == b * pred["embed"]
    assert per_module["TCJEPA.predictor.out"] == b * pred["out"]
    conditioner = sum(per_module[f"TCJEPA.predictor.blocks.{i}.cond"] for i in range(shapes.pred_depth))
    assert conditioner == b * cond
    assert per_module["TCJEPA.predictor"] == b * (sum(pred.values()) + cond)


def test_conditioner_count_follows_cond_layers_and_the_conditioner(tiny_cfg) -> None:
    from tcjepa.app.bench import flop_shapes

    def cond_flops(*overrides: str) -> float:
        cfg = tiny_cfg("method=tcjepa", *overrides)
        return sum(flops.conditioner_forward(flop_shapes(cfg, 10.0, 4.0, 6, "tcjepa")).values())

    every = cond_flops()
    depth = tiny_cfg().model.predictor.depth
    assert every > 0 and cond_flops("model.predictor.cond_layers=last") == pytest.approx(every / depth)
    assert cond_flops("model.predictor.conditioning=none", "loss.sparse_form=none") == 0
    for variant in ("caption", "adaln", "sequence", "input"):  # every registered conditioner is counted
        assert cond_flops(f"model.predictor.conditioning={variant}", "loss.sparse_form=none") > 0
