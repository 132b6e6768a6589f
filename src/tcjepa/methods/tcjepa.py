"""TC-JEPA: I-JEPA whose predictor cross-attends to caption words at every layer (paper §3.2-3.3).

Only the predictor sees text; the context encoder, the EMA target encoder and the masking are I-JEPA's.
The total loss is L_predict + lambda * L_sparse + beta * L_consistency (Eq. 4), with lambda and beta
optionally ramped in over ``loss.sparse_warmup_steps``. The regularisers and the link statistics read
the conditioner's patch-word links, so they run only when the conditioner exposes them
(``Predictor.has_word_links``); with another conditioner the objective is the prediction loss alone.
"""

from __future__ import annotations

import math

import torch

from ..config import Config, require_choice
from ..data.batch import text_spec
from ..losses.sparsity import FORMS, link_stats, sparsity_losses
from ..models.conditioning import BLOCK_HOOKS, FUSIONS, CondOutput, TextInputs, conditioner_class
from .base import BatchSpec, require
from .ijepa import IJEPA
from .schedules import ramp


class TCJEPA(IJEPA):
    text_conditioned = True
    grounded = True

    def __init__(self, cfg: Config, text_dim: int):
        super().__init__(cfg, text_dim=text_dim)

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        super().check_config(cfg)
        require(cfg.text.num_captions >= 1, "method=tcjepa needs text.num_captions >= 1")
        require_choice("loss.sparse_form", cfg.loss.sparse_form, FORMS)
        require_choice("model.predictor.caption_fusion", cfg.model.predictor.caption_fusion, FUSIONS)
        cls._check_conditioner(cfg)

    @staticmethod
    def _check_conditioner(cfg: Config) -> None:
        """Keys that only some conditioners read are refused with the others rather than silently ignored."""
        p, loss = cfg.model.predictor, cfg.loss
        cond = conditioner_class(p.conditioning)
        name = f"model.predictor.conditioning={p.conditioning}"
        regularised = loss.sparse_form != "none" and (loss.sparse_weight > 0 or loss.consistency_weight > 0)
        require(
            cond.word_links or not regularised,
            f"{name} has no patch-word links, so the sparsity and consistency regularisers "
            f"(loss.sparse_form={loss.sparse_form}) have nothing to act on; set loss.sparse_form=none, "
            "or use model.predictor.conditioning=words",
        )
        require(
            cond.fuses_captions or p.caption_fusion == "max",
            f"model.predictor.caption_fusion={p.caption_fusion} applies to conditioners that fuse per-caption "
            f"updates (words); {name} does not, so leave caption_fusion at its default",
        )
        require(
            bool(cond.hooks & BLOCK_HOOKS) or p.cond_layers == "all",
            f"model.predictor.cond_layers={p.cond_layers} picks predictor blocks, but {name} conditions no "
            "block (only the input); leave cond_layers=all",
        )

    @classmethod
    def grounded_for(cls, cfg: Config) -> bool:
        return conditioner_class(cfg.model.predictor.conditioning).word_links

    @classmethod
    def batch_spec(cls, cfg: Config) -> BatchSpec:
        return text_spec(cfg)

    def grad_report(self) -> dict[str, float]:
        """Gradient norms reaching the conditioner's W_Q, W_K, W_V (all layers): is the text path learning?"""
        if not self.grounded:  # only the words cross-attention has W_Q, W_K, W_V
            return {}
        sums = {"q": 0.0, "k": 0.0, "v": 0.0}
        for name, p in self.predictor.cond_params().items():
            for key in sums:
                if f".cond.{key}." in name and p.grad is not None:
                    sums[key] += float(p.grad.float().pow(2).sum())
        return {f"grad_norm_cond_{k}": math.sqrt(v) for k, v in sums.items()}

    def text_inputs(self, batch: dict) -> TextInputs | None:
        return TextInputs.from_batch(batch)

    def regularise(
        self, outputs: list[CondOutput], text: TextInputs | None, step: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if text is None or not outputs or not self.predictor.has_word_links:
            return super().regularise(outputs, text, step)
        loss = self.cfg.loss
        sparse, consistency = sparsity_losses(outputs, text, loss.sparse_form, loss.sparse_margin, loss.sparse_topk)
        r = ramp(step, loss.sparse_warmup_steps)
        total = r * (loss.sparse_weight * sparse + loss.consistency_weight * consistency)
        return total, sparse, consistency

    @torch.no_grad()
    def diagnostics(self, h, target, tgt_idx, loss_pred, outputs, text):  # type: ignore[override]
        stats = super().diagnostics(h, target, tgt_idx, loss_pred, outputs, text)
        if text is not None and outputs and self.predictor.has_word_links:
            stats.update(link_stats(outputs, text))
        return stats
