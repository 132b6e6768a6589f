"""I-JEPA: predict the EMA target encoder's (layer-normed) features of masked blocks from a context block.

A :class:`~tcjepa.methods.base.Method` (docs/design.md §3) with an EMA target; TC-JEPA extends it. With
``model.target=frozen:PATH`` the targets come from a frozen teacher instead (``methods/teacher.py``,
docs/design.md §4.16): no EMA, and the context encoder is the encoder users get.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config, require_choice
from ..losses.jepa import PRED_LOSSES
from ..losses.jepa import prediction_loss as jepa_loss
from ..models.conditioning import CondOutput, TextInputs
from ..models.predictor import Predictor, gather_targets
from ..models.vit import VisionTransformer, ViTSpec, vit_spec
from .base import Method, StepOutput
from .schedules import ema_at
from .teacher import TeacherRecord, frozen_teacher_path, load_teacher


def encoder_spec(cfg: Config) -> ViTSpec:
    e = cfg.model.encoder
    return vit_spec(e.size, cfg.data.image_size, e.patch_size, e.embed_dim, e.depth, e.num_heads, e.mlp_ratio)


def build_encoder(cfg: Config) -> VisionTransformer:
    return VisionTransformer(encoder_spec(cfg))


class IJEPA(Method):
    has_ema_target = True

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        require_choice("loss.pred", cfg.loss.pred, PRED_LOSSES)

    def __init__(self, cfg: Config, text_dim: int | None = None):
        super().__init__(cfg)
        self.context_encoder = build_encoder(cfg)
        spec = self.context_encoder.spec
        frozen = frozen_teacher_path(cfg)
        if frozen is None:
            self.target_encoder = copy.deepcopy(self.context_encoder).requires_grad_(False)
            target_dim = spec.embed_dim
        else:
            teacher = load_teacher(frozen, cfg.data.image_size, spec.patch_size)
            # Held in a tuple, not as a submodule: out of state_dict(), parameters(), the optimizer, DDP's
            # broadcast and FSDP's sharding. _apply moves it with the method; it stays in eval mode.
            self._teacher = (teacher.encoder,)
            self.teacher_record = TeacherRecord(teacher)  # its PATH and weight hash, in every checkpoint
            self.has_ema_target, self.frozen_target = False, True
            target_dim = teacher.encoder.spec.embed_dim
        p = cfg.model.predictor
        self.predictor = Predictor(
            spec.grid,
            spec.embed_dim,
            p.dim,
            p.depth,
            p.num_heads or spec.num_heads,
            spec.mlp_ratio,
            text_dim=text_dim,
            cond_heads=p.cond_heads,
            centred_links=cfg.loss.centred,
            conditioning=p.conditioning,
            cond_layers=p.cond_layers,
            caption_fusion=p.caption_fusion,
            out_dim=target_dim,
        )
        # The trained modules only (the EMA target runs under no_grad and stores nothing for backward).
        self.context_encoder.checkpointing = self.predictor.checkpointing = cfg.train.activation_checkpointing

    @property
    def encoder(self) -> VisionTransformer:
        """The encoder users evaluate and export: the EMA target encoder, or with a frozen teacher (which
        did not learn) the context encoder."""
        return self.context_encoder if self.frozen_target else self.target_encoder

    @property
    def target_network(self) -> VisionTransformer:
        """The encoder whose features are the targets: the EMA target encoder or the frozen teacher."""
        return self._teacher[0] if self.frozen_target else self.target_encoder

    def _apply(self, fn, recurse: bool = True):  # type: ignore[override]
        """``.to()``, ``.cuda()``, ``.float()``, ... move the frozen teacher too (it is not a submodule)."""
        super()._apply(fn, recurse)
        if self.frozen_target:
            self._teacher[0]._apply(fn, recurse)
        return self

    def text_inputs(self, batch: dict) -> TextInputs | None:
        return None

    def regularise(
        self, outputs: list[CondOutput], text: TextInputs | None, step: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(weighted total, L_sparse, L_consistency); I-JEPA has none."""
        zero = torch.zeros((), device=self.predictor.out.weight.device)
        return zero, zero, zero

    @torch.no_grad()
    def targets(self, images: torch.Tensor) -> torch.Tensor:
        h = self.target_network(images)
        return F.layer_norm(h.float(), (h.shape[-1],))

    def predict(self, batch: dict, text: TextInputs | None) -> tuple[torch.Tensor, list[CondOutput]]:
        valid = batch.get("mask_context_valid")  # present only with mask.truncate=pad
        z = self.context_encoder(batch["images"], keep=batch["mask_context"], keep_valid=valid)
        return self.predictor(z, batch["mask_context"], batch["mask_targets"], text, ctx_valid=valid)

    def forward(self, batch: dict, diagnostics: bool = False) -> StepOutput:
        h = self.targets(batch["images"])
        target = gather_targets(h, batch["mask_targets"])
        text = self.text_inputs(batch)
        pred, outputs = self.predict(batch, text)
        loss_pred = jepa_loss(pred.float(), target, self.cfg.loss.pred)
        reg, sparse, consistency = self.regularise(outputs, text, int(batch.get("step", 0)))
        terms = {"loss_pred": loss_pred, "loss_sparse": sparse, "loss_consistency": consistency}
        report = self.diagnostics(h, target, batch["mask_targets"], loss_pred, outputs, text) if diagnostics else {}
        return StepOutput(loss_pred + reg, terms, report)

    def prediction_loss(self, batch: dict) -> torch.Tensor:
        """The prediction term alone (no regulariser): what the text-usage monitor compares."""
        target = gather_targets(self.targets(batch["images"]), batch["mask_targets"])
        pred, _ = self.predict(batch, self.text_inputs(batch))
        return jepa_loss(pred.float(), target, self.cfg.loss.pred)

    @torch.no_grad()
    def diagnostics(
        self,
        h: torch.Tensor,
        target: torch.Tensor,
        tgt_idx: torch.Tensor,
        loss_pred: torch.Tensor,
        outputs: list[CondOutput],
        text: TextInputs | None,
    ) -> dict[str, float]:
        """Collapse signals (docs/findings.md §2): raw JEPA loss alone hides a collapsed target space."""
        # Baseline that ignores the image: predict each position's batch-mean target.
        baseline = gather_targets(h.mean(dim=0, keepdim=True).expand_as(h), tgt_idx)
        base_loss = jepa_loss(baseline, target, self.cfg.loss.pred)
        return {
            "target_var": float(h.var(dim=1).mean()),  # within-image token variance of the targets
            "pred_vs_mean": float(loss_pred / base_loss.clamp_min(1e-12)),
        }

    def after_step(self, step: int) -> None:
        """EMA update of the target encoder with the momentum scheduled for ``step``; none for a frozen teacher."""
        if self.frozen_target:
            return
        m = ema_at(self.cfg, step)
        with torch.no_grad():
            tgt = list(self.target_encoder.parameters())
            src = list(self.context_encoder.parameters())
            torch._foreach_lerp_(tgt, src, 1.0 - m)

    def trainable_modules(self) -> list[nn.Module]:
        return [self.context_encoder, self.predictor]
