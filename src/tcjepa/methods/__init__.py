"""Training objectives behind one contract (``base.Method``, docs/design.md §3).

``METHODS`` is the only list of method names in the project: the config's ``method`` key, the CLI and the
benchmark take their choices from it, and nothing outside this package compares a method's name.
"""

from __future__ import annotations

from ..config import Config, require_choice
from ..data.captions import text_dim_for
from ..models.vit import VIT_SIZES
from .base import BatchSpec, Method, StepOutput, require
from .contrastive import CLIP, ContrastiveMethod, SigLIP
from .ijepa import IJEPA
from .tcjepa import TCJEPA

METHODS: dict[str, type[Method]] = {"ijepa": IJEPA, "tcjepa": TCJEPA, "clip": CLIP, "siglip": SigLIP}


def method_class(name: str) -> type[Method]:
    """The registered class for ``name``, or a ConfigError naming the choices and the closest one."""
    require_choice("method", name, list(METHODS))
    return METHODS[name]


def check_config(cfg: Config) -> type[Method]:
    """Validate what ``config.validate`` cannot know: the method's name and its own requirements."""
    cls = method_class(cfg.method)
    require_choice("model.encoder.size", cfg.model.encoder.size, [*VIT_SIZES, "custom"])
    require(
        cls.has_ema_target or cfg.model.target == "ema",
        f"model.target={cfg.model.target} sets where prediction targets come from; method={cfg.method} "
        "(a contrastive baseline) predicts no targets, so leave model.target=ema",
    )
    cls.check_config(cfg)
    return cls


def build_method(cfg: Config, text_dim: int | None = None) -> Method:
    """``text_dim`` (the text encoder's word-state width) is resolved from the config when not given.

    A method that reads word states (its ``BatchSpec.text`` is ``states``) is built with their width.
    """
    cls = check_config(cfg)
    if cls.batch_spec(cfg).text == "states":
        return cls(cfg, text_dim if text_dim is not None else text_dim_for(cfg))
    return cls(cfg)


__all__ = [
    "CLIP",
    "IJEPA",
    "METHODS",
    "TCJEPA",
    "BatchSpec",
    "ContrastiveMethod",
    "Method",
    "SigLIP",
    "StepOutput",
    "build_method",
    "check_config",
    "method_class",
]
