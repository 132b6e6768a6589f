"""Small-sample statistics for paired seed comparisons, in plain Python (no scipy).

Comparisons run few seeds (typically 3), so everything here is exact or closed-form: the Student t
quantile comes from the closed-form t distribution for integer degrees of freedom (Abramowitz & Stegun
26.7.3-4) inverted by bisection, and the sign test sums the binomial distribution directly.
"""

from __future__ import annotations

import math
import statistics


def t_abs_cdf(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer ``df`` >= 1 (closed form, A&S 26.7.3 / 26.7.4)."""
    if not isinstance(df, int) or df < 1:
        raise ValueError(f"degrees of freedom must be an integer >= 1, got {df!r}")
    if t <= 0:
        return 0.0
    if math.isinf(t):
        return 1.0
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2 == 0:
        # sin(theta) * (1 + 1/2 c^2 + 1*3/(2*4) c^4 + ... up to c^(df-2))
        term, total = 1.0, 1.0
        for k in range(1, df // 2):
            term *= c2 * (2 * k - 1) / (2 * k)
            total += term
        return math.sin(theta) * total
    if df == 1:
        return 2 * theta / math.pi
    # (2/pi) * (theta + sin cos (1 + 2/3 c^2 + 2*4/(3*5) c^4 + ... up to c^(df-3)))
    term, total = 1.0, 1.0
    for k in range(1, (df - 1) // 2):
        term *= c2 * (2 * k) / (2 * k + 1)
        total += term
    return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)


def t_quantile(confidence: float, df: int) -> float:
    """The two-sided critical value: the t with P(|T| <= t) = ``confidence`` (0.95 -> 4.303 at df = 2)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
    lo, hi = 0.0, 1.0
    while t_abs_cdf(hi, df) < confidence:  # the CDF is monotone: widen until the root is bracketed
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_abs_cdf(mid, df) < confidence:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * hi:
            break
    return (lo + hi) / 2


def mean_ci(values: list[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Student t interval of the mean; None below two values (no spread to estimate)."""
    n = len(values)
    if n < 2:
        return None
    mean = statistics.fmean(values)
    half = t_quantile(confidence, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return mean - half, mean + half


def sign_test(diffs: list[float]) -> float | None:
    """Two-sided exact sign test of median 0; zero differences (ties) are dropped. None without any non-tie."""
    pos = sum(d > 0 for d in diffs)
    neg = sum(d < 0 for d in diffs)
    n = pos + neg
    if n == 0:
        return None
    tail = sum(math.comb(n, i) for i in range(min(pos, neg) + 1)) / 2**n
    return min(1.0, 2 * tail)


def min_sign_test_p(n: int) -> float:
    """The smallest two-sided sign-test p that n paired values can reach (all on one side): 2 / 2**n."""
    return min(1.0, 2 / 2**n) if n > 0 else 1.0


def paired_summary(diffs: list[float], confidence: float = 0.95) -> dict:
    """Mean, std, ``confidence`` t interval, sign-test p and seeds ahead of a list of paired differences."""
    ci = mean_ci(diffs, confidence)
    return {
        "mean": statistics.fmean(diffs),
        "std": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
        "ci_low": ci[0] if ci else None,
        "ci_high": ci[1] if ci else None,
        "p_sign": sign_test(diffs),
        "ahead": sum(d > 0 for d in diffs),
        "n": len(diffs),
    }
