"""Comparison plans: which arms (method x setting) a ``tcjepa compare`` trains, from a sweep file or configs.

A sweep file (YAML; shipped ones live in ``tcjepa/sweeps/``) names a base preset, the methods, and
optionally settings crossed with every method::

    description: TC-JEPA against I-JEPA at equal data, masks, model and budget.
    base: compare                  # a preset name or a YAML path
    overrides: []                  # key=value for every arm
    methods: {I-JEPA: {method: ijepa}, TC-JEPA: {method: tcjepa}}
    settings: {default: {}, "target 0.1-0.15": {mask.target_scale: [0.1, 0.15]}}
    floor: true                    # also evaluate the random-init encoder of every seed

Every arm of one seed trains on the same data stream (the batch of step s is a function of the seed
and s only), from the same initial weights wherever the architectures agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..config import ConfigError, _flatten, resolve_preset

SWEEP_DIR = Path(__file__).parents[1] / "sweeps"


@dataclass(frozen=True)
class Arm:
    label: str
    overrides: tuple[str, ...]  # key=value, applied after the base preset and the sweep's overrides
    method_label: str = ""
    setting: str = ""
    config: str = ""  # the arm's own preset; empty: the plan's base

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.label.lower()).strip("-")


@dataclass
class Plan:
    name: str
    base: str
    arms: list[Arm]
    description: str = ""
    floor: bool = True
    overrides: list[str] = field(default_factory=list)
    settings: list[str] = field(default_factory=list)  # setting names in order (empty: a plain comparison)
    key_metrics: list[str] = field(default_factory=list)


def sweeps() -> list[str]:
    return sorted(p.stem for p in SWEEP_DIR.glob("*.yaml"))


def _as_overrides(mapping: dict | None, where: str) -> tuple[str, ...]:
    if mapping is None:
        return ()
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where} must be a mapping of config keys to values, got {mapping!r}")
    return tuple(
        f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
        for k, v in _flatten(mapping).items()
    )


def _plan_overrides(value: object, path: Path) -> list[str]:
    """The sweep's ``overrides``: a list of key=value strings, or a mapping of keys to values."""
    if isinstance(value, dict):
        return list(_as_overrides(value, f"{path}: overrides"))
    out = [str(o) for o in value or []]
    bad = [o for o in out if "=" not in o]
    if bad:
        raise ConfigError(f"sweep file {path}: overrides must be key=value strings or a mapping; got {bad}")
    return out


def load_sweep(name_or_path: str) -> Plan:
    path = Path(name_or_path)
    if not path.is_file():
        path = SWEEP_DIR / f"{Path(name_or_path).name.removesuffix('.yaml')}.yaml"
    if not path.is_file():
        raise ConfigError(f"sweep '{name_or_path}' not found; shipped sweeps: {', '.join(sweeps())}")
    data = yaml.safe_load(path.read_text()) or {}
    unknown = set(data) - {"description", "base", "overrides", "methods", "settings", "floor", "key_metrics"}
    if unknown:
        raise ConfigError(f"sweep file {path}: unknown keys {sorted(unknown)}")
    if not data.get("methods"):
        raise ConfigError(f"sweep file {path} needs a 'methods' mapping, e.g. {{I-JEPA: {{method: ijepa}}}}")
    settings = data.get("settings") or {"": {}}
    arms = []
    for setting, s_over in settings.items():
        for m_label, m_over in data["methods"].items():
            label = m_label if setting == "" else f"{m_label} | {setting}"
            over = _as_overrides(m_over, f"{path}: methods.{m_label}") + _as_overrides(s_over, f"{path}: {setting}")
            arms.append(Arm(label, over, m_label, setting))
    return Plan(
        name=path.stem,
        base=str(data.get("base", "demo")),
        arms=arms,
        description=str(data.get("description", "")),
        floor=bool(data.get("floor", True)),
        overrides=_plan_overrides(data.get("overrides"), path),
        settings=[s for s in settings if s],
        key_metrics=list(data.get("key_metrics") or []),
    )


def plan_from_configs(configs: list[str]) -> Plan:
    """One arm per config file (its own preset), labelled by its file name."""
    paths = [resolve_preset(c) for c in configs]
    if len({p.stem for p in paths}) != len(paths):
        raise ConfigError(f"compare: config names must differ (they label the arms): {', '.join(configs)}")
    arms = [Arm(p.stem, (), p.stem, config=str(p)) for p in paths]
    return Plan(name="configs", base=str(paths[0]), arms=arms, description="one arm per config: " + ", ".join(configs))
