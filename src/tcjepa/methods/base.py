"""The method contract: what the loop, the benchmark, the monitors, evaluation and reports may rely on.

Every objective is a :class:`Method`. Callers never compare method names: they read what a method
*declares*, so a new objective (a contrastive baseline, a conditioning variant) plugs in without an ``if``
anywhere else.

- **Batch fields** (:class:`BatchSpec`): whether the method needs multi-block masks, caption word states
  or token ids, and how many captions per image. The data stream builds only what is asked for.
- **Capabilities** (class flags, checked by ``tests/methods/test_contract.py`` against the members they
  promise): ``has_ema_target`` (a context encoder trained by gradient, an EMA target encoder that users
  get; ``context_encoder`` can be evaluated too; per instance: False for a frozen teacher), ``frozen_target``
  (per instance, ``model.target=frozen:PATH``: the targets come from a frozen teacher, ``target_network``, that
  is not a submodule and never learns, so ``encoder`` is the context encoder and there is no EMA to log or
  warn about), ``text_conditioned`` (captions feed the objective and
  :meth:`Method.prediction_loss` can be rerun with shuffled captions: the text-usage monitor),
  ``grounded`` (its predictor exposes patch-word links: the regularisers, dead-zone alarm, pointing game
  and word maps run only then), ``contrastive`` (image and text embeddings in one space).
- **Output** (:class:`StepOutput`): the loss to differentiate, its named terms, and diagnostics. Terms
  and diagnostics are logged; only ``loss`` is differentiated. Diagnostics that cost a little extra are
  computed only when the caller asks (``diagnostics=True``, on logging steps), an argument rather than an
  attribute flip so that a compiled forward sees no hidden state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from ..config import Config, ConfigError
from ..data.batch import BatchSpec  # lives with batch assembly (the data layer needs it); re-exported here


@dataclass
class StepOutput:
    """What one forward pass of a method returns."""

    loss: torch.Tensor  # the scalar to differentiate
    terms: dict[str, torch.Tensor] = field(default_factory=dict)  # named loss components (logged)
    report: dict[str, float | torch.Tensor] = field(default_factory=dict)  # diagnostics (logged, not trained)

    def logged(self) -> dict[str, float | torch.Tensor]:
        """One flat dict for metrics.jsonl: ``loss``, every term, every diagnostic."""
        return {"loss": self.loss.detach(), **{k: v.detach() for k, v in self.terms.items()}, **self.report}


class Method(nn.Module):
    """Base of every objective. Subclasses set the capability flags and implement the abstract members."""

    has_ema_target: bool = False  # the family's default; a frozen-teacher instance turns it off
    frozen_target: bool = False  # set per instance by methods that take model.target=frozen:PATH
    text_conditioned: ClassVar[bool] = False
    grounded: bool = False  # the family's default; each instance sets it from its config (grounded_for)
    contrastive: ClassVar[bool] = False

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        # Capabilities that depend on the configuration (e.g. the conditioner chosen) are set per instance.
        self.grounded = type(self).grounded_for(cfg)

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        """Raise :class:`ConfigError` naming the key when ``cfg`` cannot train this method."""

    @classmethod
    def grounded_for(cls, cfg: Config) -> bool:
        """Whether a method built from ``cfg`` has patch-word links (readable without building it)."""
        return cls.grounded

    @classmethod
    def batch_spec(cls, cfg: Config) -> BatchSpec:
        return BatchSpec()

    @property
    def encoder(self) -> nn.Module:
        """The image encoder users evaluate and export."""
        raise NotImplementedError

    def forward(self, batch: dict, diagnostics: bool = False) -> StepOutput:
        raise NotImplementedError

    def after_step(self, step: int) -> None:
        """Called once after every optimizer step (e.g. the EMA update)."""

    def trainable_modules(self) -> list[nn.Module]:
        raise NotImplementedError

    def param_groups(self) -> list[dict]:
        """Weight decay on matrices only: biases, norms and other 1-D parameters are excluded."""
        decay, no_decay = [], []
        for module in self.trainable_modules():
            for p in module.parameters():
                if p.requires_grad:
                    (no_decay if p.ndim <= 1 else decay).append(p)
        return [
            {"params": decay, "apply_wd": True},
            {"params": no_decay, "apply_wd": False, "weight_decay": 0.0},
        ]

    def grad_report(self) -> dict[str, float]:
        """Gradient diagnostics read after backward on logging steps; none by default."""
        return {}

    # Members promised by capabilities (the contract test checks every flag has them).
    def prediction_loss(self, batch: dict) -> torch.Tensor:
        """text_conditioned: the loss term that captions inform, for the text-usage monitor."""
        raise NotImplementedError(f"{type(self).__name__} is not text_conditioned")


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)
