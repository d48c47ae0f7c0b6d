"""Power, named honestly: the critical |r| versus the |r| a test detects with 80% power.

The *critical* |r| is the |r| that just reaches p < alpha: a true correlation of that size
is detected only about half the time. The *detectable* |r| is the true |r| found with 80%
power (pingouin's ``power_corr``, the pwr.r.test approximation). Both depend on n and on
the alpha actually used: 0.05 uncorrected, or alpha / m at the first step of Holm over a
family of m tests.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache

import numpy as np
import pandas as pd
import pingouin
from scipy import stats
from statsmodels.stats.power import FTestPower

from paramcorr.analysis.corrections import family_sizes
from paramcorr.analysis.vocab import ALPHA, EXPLORATORY

POWER = 0.8
REFERENCE_R = 0.5  # Cohen's "large" correlation: the effect the claims' power refers to
REFERENCE_F2 = 0.15  # Cohen's "medium" f^2 for the F test of equal slopes


@lru_cache(maxsize=4096)  # asked once per row of the correlation table, for few distinct n
def critical_r(n: int, alpha: float = ALPHA) -> float:
    """Smallest |r| reaching two-sided p < alpha with n pairs (t test of r, df = n - 2)."""
    if n < 3:
        return math.nan
    t = stats.t.ppf(1 - alpha / 2, n - 2)
    return float(t / math.sqrt(n - 2 + t * t))


@lru_cache(maxsize=4096)
def detectable_r(n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The |r| a two-sided Pearson test of n pairs detects with ``power`` at ``alpha``.

    NaN where n <= 4 (pingouin's approximation needs n - 3 > 1) or alpha is not in (0, 1).
    """
    if n <= 4 or not 0 < alpha < 1:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(pingouin.power_corr(n=int(n), power=power, alpha=alpha))


@lru_cache(maxsize=4096)
def power_to_detect(n: int, r: float = REFERENCE_R, alpha: float = ALPHA) -> float:
    """Power of a two-sided Pearson test of n pairs at ``alpha`` against a true |r|."""
    if n <= 4 or not 0 < alpha < 1:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(pingouin.power_corr(r=r, n=int(n), alpha=alpha))


def f_test_power(df_num: float, df_denom: float, f2: float = REFERENCE_F2,
                 alpha: float = ALPHA) -> float:
    """Power of an F test (df_num constraints, df_denom residual df) against Cohen's f^2.

    statsmodels' ``FTestPower`` names its two df arguments the other way round (documented
    there): its ``df_num`` is the residual df and ``df_denom`` the number of constraints.
    """
    if not (df_num >= 1 and df_denom >= 1):
        return math.nan
    return float(FTestPower().power(effect_size=math.sqrt(f2), df_num=df_denom,
                                    df_denom=df_num, alpha=alpha))


def add_power(table: pd.DataFrame) -> pd.DataFrame:
    """critical_r (just reaches p < 0.05) and r80 (detected with 80% power) per row, plus,
    for confirmatory rows, r80 at the first (strictest) Holm step alpha / m of its family."""
    table = table.copy()
    n = table["n"].to_numpy()
    table["critical_r"] = [critical_r(int(k)) for k in n]
    table["r80"] = [detectable_r(int(k)) for k in n]
    sizes = family_sizes(table)
    m = table["family"].map(sizes).to_numpy(dtype=float)
    confirm = (table["family"] != EXPLORATORY).to_numpy()
    alpha = np.where(confirm & (m > 0), ALPHA / np.where(m > 0, m, 1), np.nan)
    table["alpha_holm"] = alpha
    table["r80_holm"] = [detectable_r(int(k), float(a)) if a == a else math.nan
                         for k, a in zip(n, alpha, strict=True)]
    return table


def power_table(corr: pd.DataFrame) -> pd.DataFrame:
    """power.csv: per Pearson slice, its critical |r| and the |r| detected with 80% power."""
    pear = corr[corr["method"] == "pearson"]
    return pear[["scope", "unit", "y", "n", "n_runs", "family", "critical_r", "r80",
                 "alpha_holm", "r80_holm"]].reset_index(drop=True)
