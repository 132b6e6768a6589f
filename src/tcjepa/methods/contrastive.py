"""Contrastive image-text baselines: CLIP (symmetric InfoNCE) and SigLIP (pairwise sigmoid).

The image tower is the JEPA methods' ViT, trained directly by gradient (no EMA target; it is the encoder
users evaluate), its patch tokens mean-pooled and linearly projected. The text tower is a small trainable
head (``models/text_head.py``) over the frozen encoder's word states. Both sides are L2-normalised; the
losses and their cross-rank gather live in ``losses/contrastive.py`` (docs/design.md §4.14).

**One caption per image.** The stream samples up to ``text.num_captions`` distinct captions per image in a
random order keyed by (seed, step, global sample index) (``data/keys.py``); the first present one is the
image's caption this step. Its draw is the first element of that keyed permutation, so it is the same
caption whatever ``text.num_captions`` is (1 is cheapest: only that caption's states are looked up) and
however the global batch is split over ranks. An image with no usable caption is left out of the loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config
from ..losses.contrastive import (
    CLIP_INIT_TEMPERATURE,
    SIGLIP_INIT_BIAS,
    SIGLIP_INIT_LOG_SCALE,
    clip_loss,
    siglip_loss,
)
from ..models.text_head import TextHead
from ..models.vit import VisionTransformer
from .base import BatchSpec, Method, StepOutput, require
from .ijepa import build_encoder, encoder_spec


class LogitScale(nn.Module):
    """The learnable log logit scale (and, for SigLIP, bias), a module of its own so it has a param group.

    Shape (1,), not (): FSDP shards parameters along their first dimension.
    """

    def __init__(self, log_scale: float, bias: float | None = None):
        super().__init__()
        self.log_scale = nn.Parameter(torch.full((1,), float(log_scale)))
        self.bias = None if bias is None else nn.Parameter(torch.full((1,), float(bias)))


class ContrastiveMethod(Method):
    contrastive = True

    def __init__(self, cfg: Config, text_dim: int):
        super().__init__(cfg)
        self.image_encoder = build_encoder(cfg)
        spec = self.image_encoder.spec
        c = cfg.model.contrastive
        self.image_proj = nn.Linear(spec.embed_dim, c.embed_dim, bias=False)
        nn.init.trunc_normal_(self.image_proj.weight, std=spec.embed_dim**-0.5)
        width = c.text_width or spec.embed_dim
        heads = c.text_heads or spec.num_heads
        self.text_head = TextHead(text_dim, width, c.text_depth, heads, c.embed_dim, spec.mlp_ratio)
        self.logit = self.make_logit_scale()

    def make_logit_scale(self) -> LogitScale:
        raise NotImplementedError

    def loss(self, img: torch.Tensor, txt: torch.Tensor, valid: torch.Tensor):
        raise NotImplementedError

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        require(cfg.text.num_captions >= 1, f"method={cfg.method} needs text.num_captions >= 1")
        c = cfg.model.contrastive
        spec = encoder_spec(cfg)
        width, heads = c.text_width or spec.embed_dim, c.text_heads or spec.num_heads
        require(
            width % heads == 0,
            f"model.contrastive.text_width ({width}) must be divisible by model.contrastive.text_heads ({heads})",
        )

    @classmethod
    def batch_spec(cls, cfg: Config) -> BatchSpec:
        # No masks: the image tower sees whole images. The captions' keyed order picks one (module docstring).
        return BatchSpec(masks=False, text="states", captions=cfg.text.num_captions)

    @property
    def encoder(self) -> VisionTransformer:
        """The image encoder itself: trained by gradient, no EMA copy."""
        return self.image_encoder

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, E) unit vectors: mean-pooled patch tokens, projected."""
        return F.normalize(self.image_proj(self.image_encoder(images).mean(dim=1)), dim=-1)

    def embed_texts(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One caption per row: word states (B, S, Dt), mask (B, S) -> (B, E) unit vectors."""
        return F.normalize(self.text_head(states, mask), dim=-1)

    @staticmethod
    def pick_caption(batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(states (B, S, Dt), word mask (B, S), valid (B,)): each image's first present caption."""
        present = batch["caption_mask"].bool()
        first = present.to(torch.uint8).argmax(dim=1)  # argmax returns the first maximum
        rows = torch.arange(present.shape[0], device=present.device)
        valid = present.any(dim=1)
        return batch["text"][rows, first], batch["text_mask"][rows, first].bool() & valid[:, None], valid

    def forward(self, batch: dict, diagnostics: bool = False) -> StepOutput:
        img = self.embed_images(batch["images"])
        states, mask, valid = self.pick_caption(batch)
        txt = self.embed_texts(states, mask)
        loss, report = self.loss(img.float(), txt.float(), valid)
        out = StepOutput(loss, {"loss_contrastive": loss})
        if diagnostics:
            out.report = {**report, "logit_scale": float(self.logit.log_scale.detach().exp())}
            if self.logit.bias is not None:
                out.report["logit_bias"] = float(self.logit.bias.detach())
        return out

    def trainable_modules(self) -> list[nn.Module]:
        return [self.image_encoder, self.image_proj, self.text_head, self.logit]


class CLIP(ContrastiveMethod):
    """Symmetric InfoNCE at a learnable temperature (init 0.07, logit scale clipped at 100)."""

    def make_logit_scale(self) -> LogitScale:
        return LogitScale(math.log(1.0 / CLIP_INIT_TEMPERATURE))

    def loss(self, img, txt, valid):
        return clip_loss(img, txt, valid, self.logit.log_scale)


class SigLIP(ContrastiveMethod):
    """Pairwise sigmoid loss with learnable scale and bias (init exp(t') = 10, b = -10)."""

    def make_logit_scale(self) -> LogitScale:
        return LogitScale(SIGLIP_INIT_LOG_SCALE, SIGLIP_INIT_BIAS)

    def loss(self, img, txt, valid):
        assert self.logit.bias is not None
        return siglip_loss(img, txt, valid, self.logit.log_scale, self.logit.bias)
