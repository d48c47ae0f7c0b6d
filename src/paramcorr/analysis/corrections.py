"""Multiple testing: which correction family each correlation belongs to, Holm and
Benjamini-Hochberg within it, and the families' sizes."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from paramcorr.analysis.vocab import (
    CONFIRMATORY_METRICS,
    CORR_COLUMNS,
    EXPLORATORY,
    POOLED,
    is_cell,
    strategy_family,
)


def families(table: pd.DataFrame) -> pd.Series:
    """The correction family of each row.

    Confirmatory: the paper table, i.e. Pearson on configurations of the four paper metrics
    in the optimizer x lr cells, pooled over strategies (``confirmatory: pooled``) and within
    each strategy (``confirmatory: freeze=<s>``), one family each. Everything else, the
    run-level rows included, is one exploratory family.
    """
    confirm = (is_cell(table) & (table["unit"] == "configuration") & (table["method"] == "pearson")
               & table["y"].isin(CONFIRMATORY_METRICS))
    within = [POOLED if pd.isna(f) else strategy_family(f) for f in table["freeze"]]
    return pd.Series(np.where(confirm, within, EXPLORATORY), index=table.index)


def holm_adjust(p: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values of finite ``p`` (one vectorised pass).

    Equal to statsmodels' ``multipletests(p, method="holm")[1]`` (tested), without its
    ``gc.collect()`` on every call, which cost most of the correction time in a large table.
    """
    p = np.asarray(p, dtype=float)
    m = len(p)
    if m == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate(np.minimum((m - np.arange(m)) * p[order], 1.0))
    out = np.empty(m)
    out[order] = stepped
    return out


def adjust_pvalues(table: pd.DataFrame) -> pd.DataFrame:
    """Holm and Benjamini-Hochberg within each ``family`` over the rows that have a p-value.

    Without a ``family`` column the whole table is one family.
    """
    table = table.copy()
    p = table["p"].to_numpy(dtype=float)
    family = table["family"] if "family" in table else pd.Series("all", index=table.index)
    holm, bh = np.full(len(table), np.nan), np.full(len(table), np.nan)
    for _, idx in family.groupby(family, sort=False).indices.items():
        idx = idx[np.isfinite(p[idx])]
        if len(idx):
            holm[idx] = holm_adjust(p[idx])
            bh[idx] = stats.false_discovery_control(p[idx], method="bh")
    table["p_holm"], table["p_bh"] = holm, bh
    first = [c for c in CORR_COLUMNS if c in table]
    return table[first + [c for c in table.columns if c not in first]]


def family_sizes(table: pd.DataFrame) -> dict[str, int]:
    """Tests (rows with a p-value) in each family, confirmatory families first."""
    sizes = table[table["p"].notna()].groupby("family").size().to_dict()
    return dict(sorted(sizes.items(), key=lambda kv: (kv[0] == EXPLORATORY, kv[0])))
