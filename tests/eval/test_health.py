"""Representation health on features whose spectrum and dead dimensions are known by construction."""

from __future__ import annotations

import math

import pytest
import torch

from tcjepa.eval.health import representation_health

pytestmark = pytest.mark.usefixtures("single_thread")


def test_isotropic_gaussian_is_healthy() -> None:
    g = torch.Generator().manual_seed(0)
    pooled = torch.randn(4000, 32, generator=g)
    patches = torch.randn(100, 50, 32, generator=g).half()  # 5000 rows: subsampled to 4096
    h = representation_health(pooled, patches)
    assert set(h) == {"rankme", "rankme_patch", "feat_std_mean", "feat_std_min", "dead_dim_frac", "mean_abs_corr"}
    # Singular values of a 4000 x 32 Gaussian are within ~10% of each other: entropy ~ log 32.
    assert 30 < h["rankme"] <= 32 and 30 < h["rankme_patch"] <= 32
    assert h["feat_std_mean"] == pytest.approx(1.0, abs=0.03) and h["feat_std_min"] > 0.9
    assert h["dead_dim_frac"] == 0.0
    assert h["mean_abs_corr"] < 0.03  # ~ sqrt(2 / (pi n)) = 0.013 for independent dimensions


def test_features_in_a_k_dim_subspace_have_rank_about_k() -> None:
    g = torch.Generator().manual_seed(1)
    k, d = 5, 64
    pooled = torch.randn(2000, k, generator=g) @ torch.randn(k, d, generator=g)  # zero-mean, rank exactly k
    h = representation_health(pooled)
    assert k - 2 < h["rankme"] < k + 1  # at most k (k equal singular values); unequal ones pull it a bit lower
    assert "rankme_patch" not in h
    assert h["dead_dim_frac"] == 0.0  # mixed into all 64 dimensions: nothing is constant
    assert h["mean_abs_corr"] > 0.2  # 64 dimensions driven by 5 factors are strongly correlated


def test_constant_columns_are_dead() -> None:
    g = torch.Generator().manual_seed(2)
    pooled = torch.randn(500, 16, generator=g)
    pooled[:, :4] = 0.0  # switched off
    pooled[:, 4:6] = 3.0  # stuck at a constant
    pooled[:, 6] *= 1e-5  # alive in name only: std 1e-5 of the mean std ~ 0.6
    h = representation_health(pooled)
    assert h["dead_dim_frac"] == 7 / 16
    assert h["feat_std_min"] == 0.0
    assert h["feat_std_mean"] == pytest.approx(9 / 16, abs=0.05)  # nine live dimensions of std ~1
    # Nine live zero-mean dimensions plus one constant direction (the uncentred mean): rank 10, not 16; the
    # constant's singular value (sqrt(18 n)) is 4x the others (sqrt(n)), which pulls RankMe below 10.
    assert 7 < h["rankme"] < 10


def test_collapsed_and_duplicated_features() -> None:
    h = representation_health(torch.ones(10, 8))
    assert h["dead_dim_frac"] == 1.0 and h["rankme"] == pytest.approx(1.0, abs=1e-4) and math.isnan(h["mean_abs_corr"])
    base = torch.randn(300, 1, generator=torch.Generator().manual_seed(3))
    copies = base * torch.tensor([1.0, -2.0, 0.5, 3.0])  # four dimensions, one factor
    h = representation_health(copies)
    assert h["mean_abs_corr"] == pytest.approx(1.0, abs=1e-5) and h["rankme"] == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError, match="n >= 2"):
        representation_health(torch.randn(1, 8))
