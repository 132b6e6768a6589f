"""Filling the config: defaults, then a YAML file (a path or a shipped preset), then ``key=value`` overrides.

Every value is set through its field's annotation, so ``train.steps=1e3`` becomes an int and
``train.steps=abc`` fails naming the key; an unknown key fails with the closest valid one. The result
always passes through :func:`.checks.validate` before anyone sees it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from .checks import ConfigError, validate
from .schema import Config, _flatten


def all_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted leaf key of the config, e.g. ``train.steps``."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            keys += all_keys(t, f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def _unknown_key(key: str) -> ConfigError:
    close = difflib.get_close_matches(key, all_keys(), n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else " Run `tcjepa pretrain --help-config` for the list."
    return ConfigError(f"unknown config key '{key}'.{hint}")


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against the field's annotation; return it in the annotated type."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        for arg in args[:-1]:  # the first member the value fits, e.g. "last" or [0, 5] for str | list[int]
            with contextlib.suppress(ConfigError):
                return _coerce(key, value, arg)
        return _coerce(key, value, args[-1])
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise ConfigError(
                f"config key '{key}' expects a list of {len(args)} numbers like [0.85, 1.0], got {value!r}"
            )
        return tuple(_coerce(f"{key}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args)))
    if origin is list:
        (arg,) = typing.get_args(hint)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"config key '{key}' expects a list, got {value!r}")
        return [_coerce(f"{key}[{i}]", v, arg) for i, v in enumerate(value)]
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}' expects true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"config key '{key}' expects an integer, got {value!r}")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"config key '{key}' expects a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)  # e.g. run.name=2024
        raise ConfigError(f"config key '{key}' expects a string, got {value!r}")
    raise ConfigError(f"config key '{key}' has an unsupported type {hint}")  # pragma: no cover


def _set(cfg: Any, key: str, value: Any, full_key: str) -> None:
    head, _, rest = key.partition(".")
    hints = typing.get_type_hints(type(cfg))
    if head not in hints:
        raise _unknown_key(full_key)
    hint = hints[head]
    if rest:
        if not dataclasses.is_dataclass(hint):
            raise _unknown_key(full_key)
        _set(getattr(cfg, head), rest, value, full_key)
        return
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{full_key}' is a section; set its fields, e.g. '{full_key}.<field>=...'")
        for k, v in value.items():
            _set(getattr(cfg, head), str(k), v, f"{full_key}.{k}")
        return
    setattr(cfg, head, _coerce(full_key, value, hint))


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b=1e-3`` -> ("a.b", 0.001); values are read as YAML scalars/lists."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value (e.g. train.steps=100)")
    key, _, raw = text.partition("=")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot read the value of override '{text}': {e}") from None
    # YAML reads 1e-3 as a string; accept scientific notation for numbers.
    if isinstance(value, str) and any(c in value for c in ".eE"):
        with contextlib.suppress(ValueError):
            value = float(value)
    return key.strip(), value


# The presets ship beside this package, in tcjepa/configs/ (pyproject.toml package-data).
PRESET_DIR = Path(__file__).parents[1] / "configs"


def presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def resolve_preset(path: str | Path) -> Path:
    """A YAML path, or the name of a shipped preset (``demo``, ``cpu-small``, ...)."""
    p = Path(path)
    if p.is_file():
        return p
    named = PRESET_DIR / f"{p.name.removesuffix('.yaml')}.yaml"
    if p.parent in (Path("."), Path("configs")) and named.is_file():
        return named
    raise ConfigError(f"config file '{path}' does not exist; shipped presets: {', '.join(presets())}")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file, then ``key=value`` overrides, then validation."""
    cfg = Config()
    if path is not None:
        path = resolve_preset(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file '{path}' is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file '{path}' must hold a mapping of keys, got {type(data).__name__}")
        for key, value in _flatten(data).items():
            _set(cfg, key, value, key)
    for text in overrides or []:
        key, value = parse_override(text)
        _set(cfg, key, value, key)
    validate(cfg)
    return cfg


def config_from_dict(data: dict[str, Any]) -> Config:
    cfg = Config()
    for key, value in _flatten(data).items():
        _set(cfg, key, value, key)
    validate(cfg)
    return cfg
