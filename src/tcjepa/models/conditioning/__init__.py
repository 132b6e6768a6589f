"""The predictor's text conditioners, chosen by ``model.predictor.conditioning``.

A registry rather than flags: the paper's conditioning variants (caption-level, AdaLN, input-only,
sequence) are entries using the predictor's hook points (:mod:`.base`), one module each, without
touching the predictor, the methods or the checkpoints of existing runs. The name is validated here,
where the registry lives, not in :mod:`tcjepa.config`: config is the lowest layer and knows no models.
"""

from __future__ import annotations

import difflib

from ...config import ConfigError
from .adaln import AdaLN
from .base import BLOCK_HOOKS, INPUT, NORM, RESIDUAL, Conditioner, CondOutput, CondSpec, TextInputs
from .caption import CaptionCrossAttention
from .fusion import FUSIONS, check_fusion
from .input_only import InputShift
from .sequence import SequenceTokens
from .words import TextCrossAttention


class NoConditioner(Conditioner):
    """``none``: no hook, no parameters; the predictor is exactly I-JEPA's even when captions are loaded."""


CONDITIONERS: dict[str, type[Conditioner]] = {
    "words": TextCrossAttention,
    "caption": CaptionCrossAttention,
    "adaln": AdaLN,
    "input": InputShift,
    "sequence": SequenceTokens,
    "none": NoConditioner,
}


def conditioner_class(name: str) -> type[Conditioner]:
    """The registered class for ``name``; a ConfigError naming the valid ones (and the closest) otherwise."""
    if name in CONDITIONERS:
        return CONDITIONERS[name]
    close = difflib.get_close_matches(str(name), list(CONDITIONERS), n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ConfigError(
        f"config key 'model.predictor.conditioning' must be one of {', '.join(CONDITIONERS)}; got {name!r}.{hint}"
    )


def build_conditioner(name: str, spec: CondSpec) -> Conditioner | None:
    """The conditioner ``name`` for one site: the input hook (``spec.layer`` None) or block ``spec.layer``.

    None when the conditioner has no hook at that site, so such a site holds no parameters."""
    cls = conditioner_class(name)
    wanted = {INPUT} if spec.layer is None else BLOCK_HOOKS
    return cls.from_spec(spec) if cls.hooks & wanted else None


__all__ = [
    "BLOCK_HOOKS",
    "CONDITIONERS",
    "FUSIONS",
    "INPUT",
    "NORM",
    "RESIDUAL",
    "AdaLN",
    "CaptionCrossAttention",
    "CondOutput",
    "CondSpec",
    "Conditioner",
    "InputShift",
    "NoConditioner",
    "SequenceTokens",
    "TextCrossAttention",
    "TextInputs",
    "build_conditioner",
    "check_fusion",
    "conditioner_class",
]
