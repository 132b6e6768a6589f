"""Training monitors: the JEPA loss is not a quality signal, so watch what is (docs/findings.md §2).

- RankMe effective rank of the target encoder's features on a fixed batch (collapse shows up here);
- for text-conditioned methods, the prediction loss with true versus shuffled captions on a fixed
  batch (does the predictor use the text at all?);
- the sparsity dead zone of docs/method.md §5: every patch-word cosine <= 0, so the paper's
  regulariser gives no gradient. We warn loudly when it persists.
"""

from __future__ import annotations

import logging

import torch

from ..eval.health import effective_rank

log = logging.getLogger("tcjepa.train")


def shuffled_text(batch: dict) -> dict:
    """The same batch with every image given another image's captions (a cyclic shift)."""
    out = dict(batch)
    for k in ("text", "text_mask", "caption_mask"):
        out[k] = torch.roll(batch[k], shifts=1, dims=0)
    return out


class DeadZoneAlarm:
    """Flags runs whose patch-word cosines are all <= 0 in every layer for ``patience`` logged steps."""

    def __init__(self, patience: int = 5):
        self.patience = patience
        self.streak = 0
        self.warned = False

    def update(self, metrics: dict) -> bool:
        fracs = [v for k, v in metrics.items() if k.startswith("pos_frac_l")]
        if not fracs:
            return False
        self.streak = self.streak + 1 if max(fracs) == 0.0 else 0
        dead = self.streak >= self.patience
        if dead and not self.warned:
            self.warned = True
            log.warning(
                "\n" + "!" * 78 + "\n"
                f"SPARSITY DEAD ZONE at step {metrics.get('step')}: every patch-word cosine is <= 0 in every "
                "predictor layer,\nso loss_sparse and loss_consistency are ~0 and give ~no gradient "
                "(docs/method.md §5). The\nL1 term now only pushes back cosines that turn positive; the text "
                "still reaches the predictor\nthrough attention (see text_usage), but the maps are object "
                "saliency, not word grounding.\nFor word-specific patch-word maps use loss.sparse_form=entropy "
                "(README, 'Sparsity').\n" + "!" * 78
            )
        return dead


class FixedBatchMonitor:
    """Cheap quality signals on one fixed batch, every ``train.monitor_every`` steps."""

    def __init__(self, batch: dict):
        self.batch = batch

    @torch.no_grad()
    def __call__(self, method: torch.nn.Module) -> dict[str, float]:
        was_training = method.training
        method.eval()
        try:
            images = self.batch["images"]
            feats = method.encoder(images)  # (B, N, D)
            out = {
                "rankme": effective_rank(feats.mean(dim=1)),
                "rankme_patch": effective_rank(feats.reshape(-1, feats.shape[-1])[:4096]),
                "feat_std": float(feats.mean(dim=1).std(dim=0).mean()),
            }
            if method.text_conditioned and "text" in self.batch:
                out["heldout_loss_true_text"] = float(method.prediction_loss(self.batch))
                out["heldout_loss_shuffled_text"] = float(method.prediction_loss(shuffled_text(self.batch)))
                out["text_usage"] = out["heldout_loss_shuffled_text"] / max(out["heldout_loss_true_text"], 1e-12)
            return out
        finally:
            method.train(was_training)
