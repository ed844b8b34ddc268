"""Uncertainty for results over seeds: mean with a 95% t interval, and paired differences.

"A beats B" needs a paired 95% CI that excludes 0 over at least five seeds: `paired_difference(a, b)`
pairs run i of A with run i of B (same seed, same data) and gives the mean difference with its t
interval; `verdict` words it. `paired_bootstrap` also resamples the test queries, for a claim that
should hold on another test set of the same size, not only on this one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# Two-sided 95% quantiles of Student's t, df = 1..30 (any statistics table).
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
_Z975 = 1.959964
NEGLIGIBLE = 1e-4  # relative size under which a paired difference is no difference


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with `df` degrees of freedom (table to 30, then the
    Cornish-Fisher expansion z + (z^3 + z) / (4 df), within 0.001 of the exact value)."""
    if df < 1:
        raise ValueError(f"need df >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    return _Z975 + (_Z975**3 + _Z975) / (4 * df)


def mean_ci(values: Sequence[float]) -> dict[str, float | None]:
    """mean, std (ddof 1), the 95% t half-width `ci` (std and ci None for one value) and `n`."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    if n == 0:
        raise ValueError("no values")
    if n == 1:
        return {"mean": float(x.mean()), "std": None, "ci": None, "n": 1}
    std = float(x.std(ddof=1))
    return {"mean": float(x.mean()), "std": std, "ci": t975(n - 1) * std / math.sqrt(n), "n": n}


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """`mean_ci` of a_i - b_i; `excludes_zero`: whether the 95% interval lies on one side of 0;
    `negligible`: whether the mean difference is under 0.01% of b's mean magnitude."""
    if len(a) != len(b):
        raise ValueError(f"paired values need equal counts, got {len(a)} and {len(b)}")
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    diff = mean_ci(x - y)
    # A mean difference under 0.01% of B's mean magnitude (a mixture that puts 0.9999 of its weight on
    # one teacher, against that teacher) is no difference, however narrow its interval.
    diff["negligible"] = bool(abs(diff["mean"]) <= NEGLIGIBLE * float(np.abs(y).mean()) + 1e-12)
    diff["excludes_zero"] = bool(diff["n"] > 1 and not diff["negligible"] and abs(diff["mean"]) > diff["ci"])
    return diff


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, n_boot: int = 4000, seed: int = 0
) -> dict[str, float | int | bool]:
    """Mean of a - b with a 95% percentile interval from a two-level bootstrap over seeds and queries.

    `a` and `b` are (seeds, queries) per-query scores (e.g. hits at IoU 0.7, in percent) of two rows,
    paired: row i of both is the same seed, column j the same test query. Each of `n_boot` draws
    resamples the seeds and, independently, the queries with replacement; the interval is the 2.5 and
    97.5 percentiles of the draws' mean differences. It is wider than the t interval over seeds when the
    test set is small, since the queries are a sample too.
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2 or min(x.shape) < 1:
        raise ValueError(f"need two (seeds, queries) arrays of one shape, got {x.shape} and {y.shape}")
    diff = x - y
    n_seeds, n_queries = diff.shape
    rng = np.random.default_rng(seed)
    seed_counts = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=n_boot)  # (B, S)
    query_counts = rng.multinomial(n_queries, np.full(n_queries, 1 / n_queries), size=n_boot)  # (B, Q)
    draws = np.einsum("bs,sq,bq->b", seed_counts, diff, query_counts) / (n_seeds * n_queries)
    lo, hi = (float(v) for v in np.percentile(draws, [2.5, 97.5]))
    return {
        "mean": float(diff.mean()),
        "lo": lo,
        "hi": hi,
        "excludes_zero": bool(lo > 0 or hi < 0),
        "n_seeds": n_seeds,
        "n_queries": n_queries,
    }


def ci_text(stat: dict[str, float], digits: int = 2) -> str:
    """'mean ± ci' (the 95% half-width), or the mean alone for one value."""
    if stat["n"] < 2:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['ci']:.{digits}f}"


def verdict(diff: dict[str, float], a: str = "A", b: str = "B", min_n: int = 5) -> str:
    """'A beats B', 'B beats A', 'within noise' or 'level (under 0.01%)', from a `paired_difference`. A claim
    needs at least `min_n` pairs (five seeds); with fewer, a CI that excludes 0 reads 'A ahead of B
    (n = 3, an indication)'."""
    if diff.get("negligible"):
        return "level (under 0.01%)"
    if not diff.get("excludes_zero"):
        return "within noise"
    first, second = (a, b) if diff["mean"] > 0 else (b, a)
    if diff["n"] < min_n:
        return f"{first} ahead of {second} (n = {diff['n']}, an indication)"
    return f"{first} beats {second}"
