"""Representation health: cheap statistics that flag collapsed or degenerate frozen features.

JEPA-style training can collapse (every image mapped near one point) or shrink onto a few directions
without the loss saying so. These numbers need no labels: RankMe (effective rank) of pooled and of
patch features, the spread of each dimension, the share of dimensions that are (nearly) constant,
and how correlated the live dimensions are. They are diagnostics to print beside probe scores.
"""

from __future__ import annotations

import torch

DEAD_REL_STD = 1e-3  # a dimension is dead when its std is at most this fraction of the mean std


def effective_rank(features: torch.Tensor) -> float:
    """RankMe (Garrido et al. 2023): exp of the entropy of the normalised singular values of (n, D) features."""
    s = torch.linalg.svdvals(features.float())
    p = s / s.sum().clamp_min(1e-12)
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def representation_health(
    pooled: torch.Tensor, patches: torch.Tensor | None = None, max_patch_rows: int = 4096, seed: int = 0
) -> dict[str, float]:
    """Health statistics of (n, D) pooled features and optionally (n, N, D) patch features.

    - ``rankme``: exp of the entropy of the normalised singular values of the pooled features (RankMe,
      uncentred as in the paper); between 1 and min(n, D).
    - ``rankme_patch``: the same on at most ``max_patch_rows`` patch rows drawn at random (seeded), only
      when ``patches`` is given.
    - ``feat_std_mean`` / ``feat_std_min``: mean and minimum over dimensions of the per-dimension std.
    - ``dead_dim_frac``: fraction of dimensions whose std is <= DEAD_REL_STD x the mean std. Relative, so
      the threshold does not depend on the feature scale; "<=" so that fully constant features (mean std
      0) count as all dead.
    - ``mean_abs_corr``: mean |Pearson correlation| over pairs of distinct live dimensions (0 for
      independent dimensions, 1 when all live dimensions move together; nan with fewer than two live).
    """
    x = pooled.float()
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"representation health: need (n >= 2, D) pooled features, got {tuple(x.shape)}")
    std = x.std(0)
    mean_std = std.mean()
    dead = std <= DEAD_REL_STD * mean_std
    out = {
        "rankme": effective_rank(x),
        "feat_std_mean": float(mean_std),
        "feat_std_min": float(std.min()),
        "dead_dim_frac": float(dead.float().mean()),
        "mean_abs_corr": _mean_abs_corr(x[:, ~dead]),
    }
    if patches is not None:
        rows = patches.reshape(-1, patches.shape[-1])
        if len(rows) > max_patch_rows:
            pick = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))[:max_patch_rows]
            rows = rows[pick]
        out["rankme_patch"] = effective_rank(rows.float())
    return out


def _mean_abs_corr(x: torch.Tensor) -> float:
    d = x.shape[1]
    if d < 2:
        return float("nan")
    z = (x - x.mean(0)) / x.std(0)
    corr = (z.T @ z) / (len(z) - 1)
    off_diagonal = corr.abs().sum() - corr.diagonal().abs().sum()
    return float(off_diagonal / (d * (d - 1)))
