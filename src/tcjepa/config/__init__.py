"""Typed run configuration: YAML presets plus dotted ``key=value`` overrides.

Every key is a dataclass field, so a typo or a wrong type fails at start with the key named (and, for
typos, the closest valid key), instead of silently training the wrong thing for hours.

Three parts, each readable alone: :mod:`.schema` (the sections, their fields and defaults),
:mod:`.parse` (YAML, presets and overrides into those fields) and :mod:`.checks` (what no field may
hold). Import from here; the split is for the reader, not for callers. This is the lowest floor of the
package (tests/test_layers.py): it imports nothing else from tcjepa.
"""

from __future__ import annotations

from .checks import CHOICES, PATH_SOURCES, ConfigError, cond_layer_indices, require_choice, validate
from .parse import PRESET_DIR, all_keys, config_from_dict, load_config, parse_override, presets, resolve_preset
from .schema import (
    EMA_INIT_SHARE_WARN,
    Config,
    ContrastiveConfig,
    DataConfig,
    EncoderConfig,
    LossConfig,
    MaskSection,
    ModelConfig,
    OptimConfig,
    PredictorConfig,
    RunConfig,
    TextConfig,
    TrainConfig,
    _flatten,
)

__all__ = [
    "CHOICES",
    "EMA_INIT_SHARE_WARN",
    "PATH_SOURCES",
    "PRESET_DIR",
    "Config",
    "ConfigError",
    "ContrastiveConfig",
    "DataConfig",
    "EncoderConfig",
    "LossConfig",
    "MaskSection",
    "ModelConfig",
    "OptimConfig",
    "PredictorConfig",
    "RunConfig",
    "TextConfig",
    "TrainConfig",
    "_flatten",
    "all_keys",
    "cond_layer_indices",
    "require_choice",
    "config_from_dict",
    "load_config",
    "parse_override",
    "presets",
    "resolve_preset",
    "validate",
]
