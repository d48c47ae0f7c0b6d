"""Rank correlations' bootstrap: batched Spearman / Kendall statistics and their CIs.

Every p-value and CI comes from scipy. The only numerics written here are the bootstrap
*statistics* for Spearman and Kendall: batched versions of rank correlation that scipy does
not vectorize (``kendalltau(axis=...)`` loops over resamples in Python). They are tested
equal to ``scipy.stats.spearmanr`` / ``kendalltau`` on each resample and are handed to
``scipy.stats.bootstrap``.
"""

from __future__ import annotations

import math
import warnings
import zlib

import numpy as np
from scipy import stats

from paramcorr.analysis.vocab import CONFIDENCE, is_number

# Bootstrap cost control: a CI costs about n * n_resamples. Slices with n > BOOT_WORK /
# n_boot get fewer resamples (never under BOOT_MIN_RESAMPLES). They are the large slices,
# whose CIs are narrow, so the Monte-Carlo error of the endpoints stays small in absolute
# terms (about 0.27 bootstrap SDs at 100 resamples, e.g. +-0.003 in r at n = 10,000).
BOOT_WORK = 200_000
BOOT_MIN_RESAMPLES = 100
BCA_MAX_N = 300  # BCa's jackknife is O(n^2); beyond this percentile CIs are used
DEGENERATE_MAX_SHARE = 0.1  # more undefined resamples than this: no CI at all
BATCH_CELLS = 500_000  # working elements per vectorized call: bounds memory, stays in cache


def _as_rows(a: np.ndarray) -> np.ndarray:
    return np.asarray(a).astype(np.intp, copy=False).reshape(-1, np.shape(a)[-1])


def _counts(codes: np.ndarray, k: int) -> np.ndarray:
    """Per-row counts of each code in [0, k): shape (rows, k)."""
    m = codes.shape[0]
    flat = (codes + (np.arange(m) * k)[:, None]).ravel()
    return np.bincount(flat, minlength=m * k).reshape(m, k)


def spearman_codes(cx: np.ndarray, cy: np.ndarray, kx: int, ky: int) -> np.ndarray:
    """Spearman's rho along the last axis of dense-rank codes (kx, ky distinct levels).

    Average ranks come from counting (no sort): a code's midrank is the number of smaller
    codes in the row plus (its count + 1) / 2.
    """
    lead = np.shape(cx)[:-1]
    x, y = _as_rows(cx), _as_rows(cy)
    n = x.shape[1]
    centre = (n + 1) / 2.0  # midranks always sum to n * centre
    stats_xy = []
    for codes, k in ((x, kx), (y, ky)):
        counts = _counts(codes, k)
        mid = np.cumsum(counts, axis=1) - (counts - 1) / 2.0
        spread = (counts * (mid - centre) ** 2).sum(axis=1)
        stats_xy.append((mid, spread))
    (mid_x, sxx), (mid_y, syy) = stats_xy
    rx = np.take_along_axis(mid_x, x, axis=1)
    ry = np.take_along_axis(mid_y, y, axis=1)
    sxy = np.einsum("ij,ij->i", rx, ry) - n * centre * centre
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = sxy / np.sqrt(sxx * syy)
    return rho.reshape(lead)


def kendall_codes(cx: np.ndarray, cy: np.ndarray, kx: int, ky: int) -> np.ndarray:
    """Kendall's tau-b along the last axis of dense-rank codes, via per-row contingency tables.

    Cost is O(kx * ky) per row, cheap because x (trainable parameters) takes few values.
    """
    lead = np.shape(cx)[:-1]
    x, y = _as_rows(cx), _as_rows(cy)
    m, n = x.shape
    table = _counts(x * ky + y, kx * ky).reshape(m, kx, ky)
    rows, cols = table.sum(axis=2), table.sum(axis=1)
    # later[g, l]: how many have an x level above g and y level l. A loop over the few x
    # levels beats a strided cumsum over axis 1; integer arithmetic throughout (exact, fast).
    later = np.empty_like(table)
    later[:, -1] = 0
    for g in range(kx - 2, -1, -1):
        np.add(later[:, g + 1], table[:, g + 1], out=later[:, g])
    # Pair (i at g,l) with j above in x: concordant if y_j > y_i, discordant if below, so
    # S = sum table * (above - below) = sum table * (total_g - 2 * upto + later)
    s = np.einsum("bgl,bgl->b", table, later)
    upto = np.cumsum(later, axis=2, out=later)
    s += (rows * upto[:, :, -1]).sum(axis=1) - 2 * np.einsum("bgl,bgl->b", table, upto)
    n0 = n * (n - 1) / 2.0
    ties_x = (rows * (rows - 1)).sum(axis=1) / 2.0
    ties_y = (cols * (cols - 1)).sum(axis=1) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = s / np.sqrt((n0 - ties_x) * (n0 - ties_y))
    return tau.reshape(lead)


def n_resamples_for(n: int, n_boot: int) -> int:
    """Resamples for a slice of n runs: n_boot, cut so n * resamples <= BOOT_WORK for big n."""
    return int(min(n_boot, max(BOOT_MIN_RESAMPLES, BOOT_WORK // max(n, 1))))


def bootstrap_ci(x: np.ndarray, y: np.ndarray, method: str, n_boot: int,
                 rng: np.random.Generator) -> tuple[float, float, int, str]:
    """95% bootstrap CI of Spearman's rho or Kendall's tau-b (pairs resampled).

    Returns (low, high, n_resamples, ci_method). BCa for n <= BCA_MAX_N, else percentile.
    Resamples where the statistic is undefined (constant x or y) are dropped when rare;
    when common, the CI is left empty.
    """
    if n_boot <= 0:
        return math.nan, math.nan, 0, "none: no resamples requested"
    cx, cy = np.unique(x, return_inverse=True), np.unique(y, return_inverse=True)
    kx, ky = len(cx[0]), len(cy[0])
    codes = (cx[1].astype(np.intp), cy[1].astype(np.intp))
    n = len(x)
    fn = spearman_codes if method == "spearman" else kendall_codes
    if method == "kendall" and kx > ky:  # the contingency table is cheaper tall than wide
        codes, kx, ky = codes[::-1], ky, kx

    def statistic(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        return fn(a, b, kx, ky)

    n_res = n_resamples_for(n, n_boot)
    per_row = (kx * ky + n) * 2 if method == "kendall" else n * 4  # working elements
    batch = max(1, int(BATCH_CELLS // max(per_row, 1)))
    ci_method = "BCa" if n <= BCA_MAX_N else "percentile"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.bootstrap(codes, statistic, paired=True, vectorized=True,
                              n_resamples=n_res, batch=batch, method=ci_method,
                              confidence_level=CONFIDENCE, rng=rng)
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (is_number(low) and is_number(high)):
        dist = res.bootstrap_distribution
        ok = dist[np.isfinite(dist)]
        if len(ok) >= (1 - DEGENERATE_MAX_SHARE) * len(dist):
            alpha = (1 - CONFIDENCE) / 2
            low, high = (float(v) for v in np.quantile(ok, [alpha, 1 - alpha]))
            ci_method = "percentile, undefined resamples dropped"
        else:
            low, high = math.nan, math.nan
            ci_method = "none: most resamples undefined"
    return low, high, n_res, ci_method


def bootstrap_rng(seed: int, scope: str, y: str, method: str,
                  unit: str = "run") -> np.random.Generator:
    """The generator for one row's bootstrap: depends on the row, not on table order."""
    key = f"{scope}|{y}|{method}" + ("" if unit == "run" else f"|{unit}")
    return np.random.default_rng([seed, zlib.crc32(key.encode())])
