"""``data.path`` for WebDataset shards: brace patterns and weighted sources -> lists of tar files.

Syntax (docs/design.md §4.12):

* one source is a path with brace expressions: ``{000000..000009}`` (an inclusive numeric range; the
  numbers keep the width of the first bound when it starts with 0) or ``{a,b,c}`` (alternatives); several
  braces expand to every combination, in order;
* several sources are separated by commas outside braces: ``a/{0..9}.tar,b/{0..3}.tar``;
* a source may also be a folder: every ``*.tar`` in it, in name order (what ``tcjepa data convert`` writes);
* a source may end in ``::WEIGHT`` (a positive number), the share of draws it gets in resampled mode:
  ``a/{0..9}.tar::0.7,b/{0..3}.tar::0.3``. Either every source has a weight or none has.

WebDataset itself separates patterns with ``::``; here that separator would be read as a weight, so a
``::`` not followed by a number is an error that says to use commas.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")
MAX_SHARDS = 1_000_000  # a pattern expanding further than this is surely a typo


@dataclass(frozen=True)
class ShardSource:
    """One source of ``data.path``: its pattern as written, its weight (None: unweighted) and its files."""

    pattern: str
    weight: float | None
    shards: tuple[Path, ...]


def _alternatives(body: str, pattern: str) -> list[str]:
    m = _RANGE.match(body)
    if m:
        lo, hi = m.group(1), m.group(2)
        if int(hi) < int(lo):
            raise ValueError(f"data.path {pattern!r}: the range {{{body}}} runs backwards")
        width = len(lo) if lo.startswith("0") and len(lo) > 1 else 0
        return [str(k).zfill(width) for k in range(int(lo), int(hi) + 1)]
    if "," in body:
        return body.split(",")
    raise ValueError(f"data.path {pattern!r}: {{{body}}} is neither a range {{0..9}} nor alternatives {{a,b}}")


def expand_braces(pattern: str) -> list[str]:
    """Every path ``pattern`` names, in order (``x{0..2}`` -> ``x0, x1, x2``)."""
    out = [""]
    pos = 0
    for m in _BRACE.finditer(pattern):
        choices = _alternatives(m.group(1), pattern)
        out = [head + pattern[pos : m.start()] + c for head in out for c in choices]
        pos = m.end()
        if len(out) > MAX_SHARDS:
            raise ValueError(f"data.path {pattern!r} expands to more than {MAX_SHARDS} files")
    out = [head + pattern[pos:] for head in out]
    if any(ch in p for p in out for ch in "{}"):
        raise ValueError(f"data.path {pattern!r}: unbalanced or nested braces")
    return out


def split_sources(path: str) -> list[str]:
    """``path`` cut at the commas that are not inside braces."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(path):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(path[start:i])
            start = i + 1
    parts.append(path[start:])
    return [p.strip() for p in parts]


def _weight(text: str, source: str) -> float:
    try:
        w = float(text)
    except ValueError:
        raise ValueError(
            f"data.path source {source!r}: {text!r} after '::' is not a weight; separate sources with commas "
            "(a/{0..9}.tar,b/{0..3}.tar) and give weights as PATTERN::0.7"
        ) from None
    if not w > 0 or w == float("inf"):
        raise ValueError(f"data.path source {source!r}: the weight must be a positive number, got {text}")
    return w


def parse_shard_path(path: str, must_exist: bool = True) -> list[ShardSource]:
    """The sources of ``data.path``; missing files are an error naming how many and the first."""
    sources = []
    for part in split_sources(path):
        if not part:
            raise ValueError(f"data.path {path!r} has an empty source (a stray comma?)")
        pattern, weight = part, None
        if "::" in part:
            pattern, tail = part.rsplit("::", 1)
            weight = _weight(tail, part)
        if "{" not in pattern and Path(pattern).is_dir():
            files = tuple(sorted(Path(pattern).glob("*.tar")))
            if not files:
                raise FileNotFoundError(f"data.path source {pattern!r} is a folder without any .tar shard")
        else:
            files = tuple(Path(p) for p in expand_braces(pattern))
        missing = [f for f in files if not f.is_file()] if must_exist else []
        if missing:
            raise FileNotFoundError(
                f"data.path source {pattern!r}: {len(missing)} of its {len(files)} shard files do not exist "
                f"(the first: {missing[0]})"
            )
        sources.append(ShardSource(pattern, weight, files))
    weighted = [s.weight is not None for s in sources]
    if any(weighted) and not all(weighted):
        raise ValueError(f"data.path {path!r}: give every source a weight (PATTERN::W) or none")
    return sources


def looks_like_shards(path: str) -> bool:
    """Whether ``path`` names tar shards (what ``tcjepa data validate`` uses to pick the format)."""
    parts = [p.split("::")[0] for p in split_sources(path)]
    return any(p.endswith(".tar") or (Path(p).is_dir() and any(Path(p).glob("*.tar"))) for p in parts)
