"""Training objectives behind one interface (docs/design.md §3); ``build_method`` picks one by config."""

from __future__ import annotations

from torch import nn

from ..config import Config
from .ijepa import IJEPA
from .tcjepa import TCJEPA

METHODS = {"ijepa": IJEPA, "tcjepa": TCJEPA}


def build_method(cfg: Config, text_dim: int | None = None) -> nn.Module:
    """``text_dim`` is the width of the text encoder's word states; methods that need text require it."""
    if cfg.method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {cfg.method!r}")
    cls = METHODS[cfg.method]
    if cls.needs_text:
        if text_dim is None:
            raise ValueError(f"method {cfg.method} needs the text encoder's width (text_dim)")
        return cls(cfg, text_dim)
    return cls(cfg)


__all__ = ["IJEPA", "TCJEPA", "METHODS", "build_method"]
