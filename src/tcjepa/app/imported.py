"""Seeds of a comparison taken from an earlier ``report.json`` instead of from run folders.

A sweep's seeds are often trained apart: on several machines, in several sessions, or long enough ago that
the run folders (checkpoints included) were deleted and only the committed report is left. ``tcjepa compare
--merge-report OLD/report.json`` reads the per-seed values that report stored for each arm and fills in the
seeds the output folder does not hold, so one report covers them all with the same seed-paired statistics.

The earlier report must be of the same sweep, made with the same evaluation suite, and every arm's resolved
configuration must match this command's (the keys that may change on a resume aside); otherwise its numbers
belong to another experiment and the import is refused with the differences named. A seed present in both
places is taken from the run folder. Figures that need the runs themselves (training curves, word maps) are
drawn from the run folders only; the report says which seeds came from where.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Config, ConfigError
from ..train.checkpoint import config_differences
from .results import FLOOR, PerSeed
from .sweeps import Plan


@dataclass
class ImportedReport:
    source: Path
    command: str
    machine: str
    runs: dict[str, PerSeed]  # arm label -> seed id -> target-encoder metrics and end-of-training monitors
    context_runs: dict[str, PerSeed]  # the same for the context encoder of JEPA arms
    used: dict[str, list[int]] = field(default_factory=dict)  # seeds this report actually supplied, per arm


def _per_seed(summaries: dict[str, dict]) -> PerSeed:
    """Undo the report's aggregation: metric -> {"values": {seed: v}} back to seed -> metric -> v."""
    out: PerSeed = {}
    for key, summary in summaries.items():
        for seed, value in summary.get("values", {}).items():
            if value is not None and math.isfinite(value):
                out.setdefault(int(seed), {})[key] = value
    return out


def _differences(saved: dict, current: Config) -> list[str]:
    diffs = [d for d in config_differences(saved, current.to_dict()) if not d.startswith("seed:")]
    steps = saved.get("train", {}).get("steps")
    if steps != current.train.steps:  # resumable, but a run of another length is another arm
        diffs.append(f"train.steps: the report has {steps!r}, this arm has {current.train.steps!r}")
    return diffs


def load_report(path: str | Path, plan: Plan, cfgs: dict[tuple[int, str], Config], suite: str) -> ImportedReport:
    """Read ``path`` and check that its arms are this plan's arms under the same settings and suite."""
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"--merge-report {path}: no such file (give a comparison's report.json)") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"--merge-report {path}: not valid JSON ({e})") from None
    missing = [k for k in ("plan", "suite", "metrics", "configs") if k not in data]
    if missing:
        raise ConfigError(f"--merge-report {path}: not a comparison report (no {', '.join(missing)})")
    if data["plan"] != plan.name:
        raise ConfigError(f"--merge-report {path} is a report of sweep {data['plan']!r}, not of {plan.name!r}")
    if data["suite"] != suite:
        raise ConfigError(
            f"--merge-report {path} was evaluated with the {data['suite']!r} suite, this command uses {suite!r}; "
            f"pass --suite {data['suite']} or leave that report out"
        )
    arms = {a.label: a for a in plan.arms}
    problems = []
    for label in data["metrics"]:
        if label == FLOOR and plan.floor:
            continue
        if label not in arms:
            problems.append(f"arm {label!r} is not in this sweep (its arms: {', '.join(arms)})")
        elif label not in data["configs"]:
            problems.append(f"arm {label!r} has no configuration in the report")
        else:
            problems += [f"{label}: {d}" for d in _differences(data["configs"][label], cfgs[(0, arms[label].slug)])]
    if problems:
        raise ConfigError(
            f"--merge-report {path} holds another experiment than this command, so its seeds cannot be pooled:\n  "
            + "\n  ".join(problems)
        )
    return ImportedReport(
        source=path,
        command=data.get("command", "?"),
        machine=data.get("machine", "?"),
        runs={label: _per_seed(m) for label, m in data["metrics"].items()},
        context_runs={label: _per_seed(m) for label, m in data.get("context_encoder_metrics", {}).items()},
    )


def fill_missing_seeds(
    runs: dict[str, PerSeed], context_runs: dict[str, PerSeed], imports: list[ImportedReport], seeds: int
) -> None:
    """Add the imported seeds below ``seeds`` that the run folders lack (in place; run folders win)."""
    for imp in imports:
        for label, per_seed in imp.runs.items():
            mine = runs.setdefault(label, {})
            for seed, metrics in per_seed.items():
                if seed < seeds and seed not in mine:
                    mine[seed] = metrics
                    imp.used.setdefault(label, []).append(seed)
                    if seed in imp.context_runs.get(label, {}):
                        context_runs.setdefault(label, {})[seed] = imp.context_runs[label][seed]
    for table in (runs, context_runs):
        for label in table:
            table[label] = dict(sorted(table[label].items()))


def supplied_seeds(imports: list[ImportedReport], seeds: int) -> set[tuple[str, int]]:
    """(arm label, seed) pairs the imports hold below ``seeds``: compare need not train them."""
    return {(label, s) for imp in imports for label, per in imp.runs.items() for s in per if s < seeds}


def import_lines(imports: list[ImportedReport]) -> list[str]:
    """The report's account of which seeds came from which earlier report."""
    used = [imp for imp in imports if imp.used]
    if not used:
        return []
    lines = ["", "## Seeds taken from earlier reports", ""]
    for imp in used:
        seeds = sorted({s for per in imp.used.values() for s in per})
        arms = "every arm" if len(imp.used) == len(imp.runs) else ", ".join(sorted(imp.used))
        lines.append(
            f"- Seed(s) {', '.join(map(str, seeds))} of {arms} from `{imp.source}` (made by `{imp.command}` on "
            f"{imp.machine}); its configurations match this command's. Their training curves and word maps are "
            "not redrawn here (the run folders are not at hand); metrics the older suite did not have are "
            "missing for those seeds."
        )
    return lines
