"""Confidence intervals: seeded percentile bootstrap over cases, and the Wilson score interval for proportions.

One ROI of the MIAS test set moves accuracy by 1.56 points, so every headline number in results/ carries one of
these. The bootstrap resamples *cases* (images, ROIs or patients) with replacement, recomputes the metric, and
takes the 2.5 and 97.5 percentiles; it is seeded so the same inputs always give the same interval.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

__all__ = ["bootstrap_ci", "mcnemar_exact", "seed_cell", "seed_interval", "seed_spread", "seeds_mark",
           "wilson_interval"]


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``successes / n`` (Wilson 1927)."""
    if n <= 0:
        return float("nan"), float("nan")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n], got {successes} of {n}")
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def mcnemar_exact(correct_a, correct_b) -> float:
    """Two-sided exact McNemar p-value for two classifiers on the same cases: a binomial test on the discordant
    pairs (cases exactly one of them gets right). 1.0 when there are none."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b.shape:
        raise ValueError(f"correct_a and correct_b differ in shape: {a.shape} vs {b.shape}")
    n01, n10 = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n, k = n01 + n10, min(n01, n10)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n
    return float(min(1.0, 2.0 * tail))


def bootstrap_ci(
    metric: Callable[..., float],
    *arrays,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    groups=None,
) -> tuple[float, float, float]:
    """Percentile bootstrap: returns ``(point, low, high)`` of ``metric(*arrays)``.

    ``arrays`` are aligned per case (first axis). With ``groups`` the resampling draws whole groups (patients,
    duplicate groups) so that correlated cases move together. Resamples where the metric is undefined (NaN, for
    example an AUC with one class) are dropped; if more than half are, the interval is NaN.
    """
    arrays = [np.asarray(a) for a in arrays]
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"arrays differ in length: {[len(a) for a in arrays]}")
    point = float(metric(*arrays))
    if n == 0:
        return point, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    if groups is None:
        idx_sets = None
    else:
        groups = np.asarray(groups)
        uniq = np.unique(groups)
        idx_sets = [np.flatnonzero(groups == g) for g in uniq]
    stats = []
    for _ in range(n_boot):
        if idx_sets is None:
            idx = rng.integers(0, n, n)
        else:
            pick = rng.integers(0, len(idx_sets), len(idx_sets))
            idx = np.concatenate([idx_sets[i] for i in pick])
        with np.errstate(all="ignore"):
            try:
                v = float(metric(*[a[idx] for a in arrays]))
            except ValueError:
                v = float("nan")
        stats.append(v)
    stats = np.asarray(stats)
    ok = stats[~np.isnan(stats)]
    if len(ok) < n_boot / 2:
        return point, float("nan"), float("nan")
    alpha = (1.0 - confidence) / 2.0
    return point, float(np.quantile(ok, alpha)), float(np.quantile(ok, 1.0 - alpha))


def seed_interval(values, clip: tuple[float, float] | None = (0.0, 1.0)) -> tuple[float, float, float]:
    """Mean over seeds and mean +- t(0.975, n-1) standard errors (seed-to-seed spread only), clipped to ``clip``
    (None: not clipped, for differences). NaNs are ignored; fewer than two values give a NaN interval."""
    from scipy.stats import t as student_t

    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    m = float(np.mean(v)) if len(v) else float("nan")
    if len(v) < 2:
        return m, float("nan"), float("nan")
    half = float(student_t.ppf(0.975, len(v) - 1) * np.std(v, ddof=1) / np.sqrt(len(v)))
    lo, hi = m - half, m + half
    if clip is not None:
        lo, hi = max(clip[0], lo), min(clip[1], hi)
    return m, lo, hi


def seed_cell(rows, key: str) -> tuple[float, ...]:
    """One table cell for ``key`` over the seeds' ``rows``: one row gives its value with the bootstrap interval it
    recorded as ``<key>_ci`` (just the value if none); several give :func:`seed_interval` of their values."""
    if len(rows) == 1:
        ci = rows[0].get(f"{key}_ci")
        return (float(rows[0][key]), *ci) if ci else (float(rows[0][key]),)
    return seed_interval([r[key] for r in rows])


def seeds_mark(n: int) -> str:
    """The label mark of a column or row averaged over ``n`` seeds (" (3 seeds)"; none for one), which
    :mod:`medattn.evaluation.report` reads back when it matches targets to table cells."""
    return f" ({n} seeds)" if n > 1 else ""


def seed_spread(rows, by: str, metrics) -> list[dict]:
    """The spread over seeds of every ``metric`` per value of ``rows``' field ``by`` (protocol, backbone, ...):
    number of seeds, mean, sample sd, min, max, the 95 % interval of :func:`seed_interval` and every seed's value
    in seed order. Rows without a value for a metric are left out of that metric's line; a metric no row of a
    group has gives no line."""
    groups: dict = {}
    for r in rows:
        groups.setdefault(r[by], {})[r["seed"]] = r
    out = []
    for name, runs in groups.items():
        for k in metrics:
            v = [runs[s][k] for s in sorted(runs) if runs[s].get(k) is not None]
            if not v:
                continue
            m, lo, hi = seed_interval(v)
            out.append({by: name, "metric": k, "n_seeds": len(v), "mean": m,
                        "sd": float(np.std(v, ddof=1)) if len(v) > 1 else None, "min": min(v), "max": max(v),
                        "ci_low": lo, "ci_high": hi, "per_seed": ", ".join(f"{x:.4f}" for x in v)})
    return out
