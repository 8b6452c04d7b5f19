"""The statistics of ``protocol.md``: paired differences over seeds with t-intervals, Holm's
step-down over a family of one-sided tests (each interval at the level of its Holm step), and the
gap closed with a bootstrap interval over seeds.

Inputs are ``{seed: AP}`` mappings of two rows; only seeds present in both are paired.
"""
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class PairedDifference:
    """``mean`` of (row - reference) over ``n`` shared seeds, its sample ``std``, the one-sided
    p-value of "row > reference" (paired t-test) and a two-sided interval at ``level``."""

    mean: float
    std: float
    n: int
    p_greater: float
    low: float
    high: float
    level: float


def paired(row: Mapping[int, float], reference: Mapping[int, float]) -> Tuple[List[int], np.ndarray]:
    """The seeds shared by both rows (sorted) and the differences row - reference on them."""
    seeds = sorted(set(row) & set(reference))
    return seeds, np.array([row[s] - reference[s] for s in seeds], dtype=float)


def t_interval(diffs: np.ndarray, level: float) -> Tuple[float, float]:
    """Two-sided t-interval of the mean of ``diffs`` at ``level`` (n - 1 degrees of freedom).
    Needs two or more values."""
    n = len(diffs)
    if n < 2:
        raise ValueError(f"an interval needs two or more paired seeds, got {n}")
    half = stats.t.ppf(0.5 + level / 2, n - 1) * diffs.std(ddof=1) / np.sqrt(n)
    return float(diffs.mean() - half), float(diffs.mean() + half)


def paired_difference(row: Mapping[int, float], reference: Mapping[int, float], level: float = 0.95) -> PairedDifference:
    """Paired difference of ``row`` to ``reference`` with a t-interval at ``level`` and the
    one-sided p-value of a positive mean difference."""
    _, d = paired(row, reference)
    low, high = t_interval(d, level)
    std = float(d.std(ddof=1))
    if std == 0.0:
        p = 0.0 if d.mean() > 0 else 1.0
    else:
        p = float(stats.t.sf(d.mean() / (std / np.sqrt(len(d))), len(d) - 1))
    return PairedDifference(float(d.mean()), std, len(d), p, low, high, level)


def holm(rows: Mapping[str, Mapping[int, float]], reference: Mapping[int, float],
         alpha: float = 0.05) -> Dict[str, Dict]:
    """Holm's step-down over the one-sided paired tests "row > reference" of every row.

    The k-th smallest p-value (k = 1..m) is tested at ``alpha / (m - k + 1)`` as long as every
    smaller one was rejected; each row's difference is reported with the two-sided interval at
    level ``1 - 2 * alpha / (m - k + 1)`` — whose lower bound is the one-sided bound of that test, so
    "lower bound above zero" and "rejected" agree for the rows Holm reaches. Returns per row:
    ``difference`` (PairedDifference at that level), ``holm_alpha``, ``rejected``.
    """
    m = len(rows)
    plain = {name: paired_difference(r, reference) for name, r in rows.items()}
    order = sorted(rows, key=lambda name: plain[name].p_greater)
    out, still_rejecting = {}, True
    for k, name in enumerate(order, start=1):
        step_alpha = alpha / (m - k + 1)
        diff = paired_difference(rows[name], reference, level=1 - 2 * step_alpha)
        rejected = still_rejecting and diff.p_greater <= step_alpha
        still_rejecting = rejected
        out[name] = {"difference": diff, "holm_alpha": step_alpha, "rejected": rejected}
    return out


def gap_closed(row: Mapping[int, float], student: Mapping[int, float], teacher: float,
               n_boot: int = 10000, level: float = 0.95, seed: int = 0) -> Dict[str, Optional[float]]:
    """Share of the teacher-student gap that ``row`` closes: mean over shared seeds of
    (row - student) divided by (teacher - mean student), with a percentile interval from
    ``n_boot`` resamples of the seeds (with replacement; the same resample for both rows)."""
    seeds, d = paired(row, student)
    base = np.array([student[s] for s in seeds], dtype=float)
    point = float(d.mean() / (teacher - base.mean()))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(seeds), size=(n_boot, len(seeds)))
    boot = d[idx].mean(axis=1) / (teacher - base[idx].mean(axis=1))
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return {"mean": point, "low": float(low), "high": float(high), "seeds": len(seeds)}


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0
