"""Every registered method honours the contract of ``methods.base``: the same checks, run over ``METHODS``.

This is what keeps "the loop, benchmark, monitors, evaluation and reports never branch on a method's name"
true: they rely on these members and flags only, and a new method that breaks one fails here first.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torch import nn

from tcjepa.config import load_config
from tcjepa.data.stream import PretrainStream
from tcjepa.eval.grounding import patch_word_cosines
from tcjepa.export import export_encoder
from tcjepa.methods import METHODS, BatchSpec, Method, StepOutput, build_method
from tcjepa.models.conditioning import CONDITIONERS, FUSIONS, TextInputs
from tcjepa.models.vit import VisionTransformer, ViTSpec
from tcjepa.train.monitors import shuffled_text

pytestmark = pytest.mark.usefixtures("single_thread")
SRC = Path(__file__).resolve().parents[2] / "src" / "tcjepa"


# Every registered method, plus TC-JEPA with every other conditioner (those without word links change a
# capability) and every caption fusion.
CASES = (
    [(name, ()) for name in sorted(METHODS)]
    + [
        ("tcjepa", (f"model.predictor.conditioning={c}", "loss.sparse_form=none"))
        for c in sorted(CONDITIONERS)
        if c != "words"
    ]
    + [("tcjepa", (f"model.predictor.caption_fusion={f}",)) for f in FUSIONS if f != "max"]
    + [("tcjepa", ("model.predictor.cond_layers=last",))]
    # A frozen teacher (model.target=frozen:PATH) for the methods that predict targets; {teacher} is an
    # exported random encoder of another width made once per session.
    + [(name, ("model.target=frozen:{teacher}",)) for name in sorted(METHODS) if METHODS[name].has_ema_target]
)


@pytest.fixture(scope="session")
def teacher(tmp_path_factory) -> Path:
    torch.manual_seed(7)
    return export_encoder(VisionTransformer(ViTSpec(32, 4, 48, 2, 2)), tmp_path_factory.mktemp("teacher") / "enc")


@pytest.fixture(params=CASES, ids=[" ".join((n, *o)) for n, o in CASES])
def setup(request, teacher: Path) -> tuple[Method, dict]:
    name, overrides = request.param
    overrides = tuple(o.format(teacher=teacher) for o in overrides)
    cfg = load_config("tiny", [f"method={name}", "train.batch_size=4", *overrides])
    torch.manual_seed(0)
    method = build_method(cfg)
    spec = method.batch_spec(cfg)
    batch = PretrainStream(cfg, spec)[0]
    batch.pop("stats")
    return method, batch


def test_is_a_method_with_a_batch_spec(setup) -> None:
    method, batch = setup
    assert isinstance(method, Method)
    spec = method.batch_spec(method.cfg)
    assert isinstance(spec, BatchSpec)
    if spec.masks:
        assert {"mask_context", "mask_targets"} <= batch.keys()
    if spec.text == "states":
        assert batch["text"].shape[1] == spec.captions == method.cfg.text.num_captions


def test_forward_backward_after_step(setup) -> None:
    method, batch = setup
    out = method(batch)
    assert isinstance(out, StepOutput)
    assert out.loss.ndim == 0 and out.loss.requires_grad and torch.isfinite(out.loss)
    assert all(t.ndim == 0 for t in out.terms.values())
    assert out.report == {}  # diagnostics only when asked for
    logged = out.logged()
    assert "loss" in logged and set(out.terms) <= logged.keys()
    assert method(batch, diagnostics=True).report  # and then there are some
    out.loss.backward()
    before = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in method.state_dict().items()}
    method.after_step(0)
    assert set(before) == set(method.state_dict())


def test_param_groups_hold_every_trainable_parameter_once(setup) -> None:
    method, _ = setup
    grouped = [p for g in method.param_groups() for p in g["params"]]
    assert len(grouped) == len({id(p) for p in grouped})
    trainable = {id(p) for m in method.trainable_modules() for p in m.parameters() if p.requires_grad}
    assert {id(p) for p in grouped} == trainable
    assert all(p.ndim <= 1 for g in method.param_groups() if not g["apply_wd"] for p in g["params"])


def test_state_dict_round_trip_gives_the_same_loss(setup) -> None:
    method, batch = setup
    torch.manual_seed(1)
    other = build_method(method.cfg)
    other.load_state_dict(method.state_dict())
    torch.testing.assert_close(other(batch).loss, method(batch).loss, rtol=0, atol=0)


def test_capabilities_have_the_members_they_promise(setup) -> None:
    method, batch = setup
    assert isinstance(method.encoder, nn.Module)
    if method.has_ema_target:
        assert isinstance(method.context_encoder, nn.Module) and method.encoder is method.target_encoder
        assert not any(p.requires_grad for p in method.target_encoder.parameters())
    if method.frozen_target:  # the teacher: frozen, outside the method's modules, state and optimizer
        assert not method.has_ema_target and method.encoder is method.context_encoder
        teacher = method.target_network
        assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
        assert not {id(p) for p in teacher.parameters()} & {id(p) for p in method.parameters()}
        assert not any(m is teacher for m in method.modules())
        before = {k: v.clone() for k, v in teacher.state_dict().items()}
        method(batch).loss.backward()
        method.after_step(0)
        assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    if method.text_conditioned:
        assert method.batch_spec(method.cfg).text != "none"
        true, shuffled = method.prediction_loss(batch), method.prediction_loss(shuffled_text(batch))
        assert torch.isfinite(true)
        if method.grounded:  # the captions do reach the loss through the word links
            assert float(true.detach()) != float(shuffled.detach())
        torch.testing.assert_close(true, method(batch).terms["loss_pred"], rtol=0, atol=0)
    assert method.grounded == type(method).grounded_for(method.cfg)
    if method.contrastive:  # one image-text space: what retrieval and zero-shot evaluation read
        assert method.batch_spec(method.cfg).text == "states"
        with torch.no_grad():
            img = method.embed_images(batch["images"])
            txt = method.embed_texts(batch["text"][:, 0], batch["text_mask"][:, 0])
        assert img.shape == txt.shape == (batch["images"].shape[0], img.shape[1])
        torch.testing.assert_close(img.norm(dim=1), torch.ones(len(img)))
        torch.testing.assert_close(txt.norm(dim=1), torch.ones(len(txt)))
    if method.grounded:
        assert method.text_conditioned
        cos = patch_word_cosines(method, batch["images"], TextInputs.from_batch(batch))
        assert cos.shape[:3] == (batch["images"].shape[0], method.encoder.spec.num_patches, batch["text"].shape[1])


def _name_comparisons(source: str) -> list[int]:
    """Lines with a comparison (==, !=, in) against a registered method name."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            for operand in [node.left, *node.comparators]:
                names = operand.elts if isinstance(operand, ast.Tuple | ast.List | ast.Set) else [operand]
                if any(isinstance(n, ast.Constant) and n.value in METHODS for n in names):
                    lines.append(node.lineno)
    return lines


def test_no_file_outside_methods_compares_a_method_name() -> None:
    hits = [
        f"{p.relative_to(SRC)}:{line}"
        for p in sorted(SRC.rglob("*.py"))
        if "methods" not in p.relative_to(SRC).parts
        for line in _name_comparisons(p.read_text())
    ]
    assert not hits, "declare a capability in methods/base.py instead of comparing names:\n" + "\n".join(hits)


def test_the_name_check_sees_both_forms() -> None:
    source = 'if cfg.method == "tcjepa":\n    pass\nok = m in ("ijepa", "other")\nfine = m == "clip-ish"\n'
    assert _name_comparisons(source) == [1, 3]
