"""TC-JEPA: I-JEPA whose predictor cross-attends to caption words at every layer (paper §3.2-3.3).

Only the predictor sees text; the context encoder, the EMA target encoder and the masking are I-JEPA's.
The total loss is L_predict + lambda * L_sparse + beta * L_consistency (Eq. 4), with lambda and beta
optionally ramped in over ``loss.sparse_warmup_steps``. The regularisers and the link statistics read
the conditioner's patch-word links, so they run only when the conditioner exposes them
(``Predictor.has_word_links``); with another conditioner the objective is the prediction loss alone.
"""

from __future__ import annotations

import torch

from ..config import Config
from ..models.conditioning import CondOutput, TextInputs
from .ijepa import IJEPA
from .schedules import ramp
from .sparsity import link_stats, sparsity_losses


class TCJEPA(IJEPA):
    needs_text = True

    def __init__(self, cfg: Config, text_dim: int):
        super().__init__(cfg, text_dim=text_dim)

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
