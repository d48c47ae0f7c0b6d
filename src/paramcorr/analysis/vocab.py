"""The analysis's vocabulary: the names every table, figure and rule agrees on, stated once.

The ground floor of ``paramcorr.analysis``: it imports nothing from the analysis package
(only the record's statuses and the strategies' vocabulary), so every other module can
import from it without a cycle. It holds

- the x variable (:data:`X`), the significance level and confidence (:data:`ALPHA`,
  :data:`CONFIDENCE`);
- the axes a slice is cut along (:data:`SCOPE_AXES`, :data:`CELL_AXES`), their levels in
  display order (:func:`levels`), how a value is written (:func:`format_value`) and the
  slices themselves (:class:`Scope`, :func:`scopes`);
- the optimizer x lr *cell* predicate (:func:`is_cell`), the one test of "is this row a
  paper cell" every module uses;
- metric *roles*, kept apart on purpose: :data:`CONFIRMATORY_METRICS` define the
  confirmatory correction families, :data:`DISPLAYED_METRICS` what the paper table, report
  and figures show. Showing a further metric must never enlarge a correction family, so
  the two are separate names even while they hold the same four outcomes;
- the correction families' names (:data:`POOLED`, :data:`EXPLORATORY`,
  :func:`strategy_family`) and the units of inference (:data:`UNITS`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from paramcorr.record import FINISHED_STATUSES, finite_number
from paramcorr.strategy_names import STRATEGY_ORDER

# --- the x variable, significance and confidence ---------------------------------------

X = "log10_trainable"  # base-10 log of params.trainable (runs.csv column, correlations' x)
ALPHA = 0.05  # every test's level, uncorrected or as the family rate Holm holds
# The CIs' level: two-sided at ALPHA, so a CI excludes 0 exactly when p < ALPHA (Pearson).
CONFIDENCE = 0.95

# --- what enters statistics -------------------------------------------------------------

# The analysis uses the runs a job finished (completed or diverged); failed ones are listed.
USED_STATUSES = FINISHED_STATUSES
METHODS = ("pearson", "spearman", "kendall")
# correlations.csv's columns, in the contract's order (DESIGN.md); never renamed, only added.
CORR_COLUMNS = ["scope", "x", "y", "method", "n", "r", "p", "ci_low", "ci_high",
                "p_holm", "p_bh", "unit", "family"]
UNITS = ("run", "configuration")

# --- metric roles -----------------------------------------------------------------------

# The paper's four outcomes (collect orders runs.csv's metric columns by them).
MAIN_METRICS = ("test_acc", "test_f1", "gen_acc", "gen_f1")
# Confirmatory role: the paper table's families test exactly these, on configurations.
CONFIRMATORY_METRICS = MAIN_METRICS
# Displayed role: the paper table's columns, the scatter figures and LaTeX show these.
DISPLAYED_METRICS = MAIN_METRICS
# The outcomes the beyond-paper models are fitted to: the paper's four plus the gap.
MODEL_METRICS = (*MAIN_METRICS, "gap_acc")

# --- axes, levels, scopes ---------------------------------------------------------------

SCOPE_AXES = ("optimizer", "lr", "freeze")  # a scope's name joins them in this order
CELL_AXES = ("optimizer", "lr")  # a paper cell: one optimizer at one learning rate
FREEZE_ORDER = STRATEGY_ORDER  # the strategies' one vocabulary (paramcorr.strategy_names)

# --- correction families ----------------------------------------------------------------

POOLED = "confirmatory: pooled"
EXPLORATORY = "exploratory"


def strategy_family(freeze: object) -> str:
    """The confirmatory family of the paper table within one freeze strategy."""
    return f"confirmatory: freeze={format_value('freeze', freeze)}"


def is_number(value: object) -> bool:
    """Is ``value`` a finite real number (not None, NaN, inf, a string or a bool)?"""
    return finite_number(value) is not None


def format_value(axis: str, value: object) -> str:
    """A run-axis value as written in runs.csv (lr via ``repr(float)``)."""
    if axis == "lr":
        return repr(float(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def used_mask(runs: pd.DataFrame) -> np.ndarray:
    """Runs that enter statistics: completed or diverged (failed ones are only listed)."""
    return runs["status"].isin(USED_STATUSES).to_numpy()


def is_cell(frame: pd.DataFrame, pooled: bool = False) -> pd.Series:
    """Rows whose scope is an optimizer x lr cell, read from the scope-axis columns (never
    parsed out of the scope string); ``pooled``: only cells pooled over freeze strategies."""
    mask = frame[CELL_AXES[0]].notna()
    for axis in CELL_AXES[1:]:
        mask = mask & frame[axis].notna()
    if pooled:
        mask = mask & frame["freeze"].isna()
    return mask


def scope_name(axes: dict) -> str:
    """A scope's name as correlations.csv writes it: ``key=value`` pairs of its axes in
    SCOPE_AXES order, comma-joined (``all`` for none), e.g. ``optimizer=adam,lr=0.001``."""
    pairs = [(a, axes[a]) for a in SCOPE_AXES if a in axes]
    return ",".join(f"{a}={format_value(a, v)}" for a, v in pairs) or "all"


def levels(frame: pd.DataFrame, axis: str) -> list:
    """The values of ``axis`` present, in the one order every table and figure uses.

    freeze: the strategies' vocabulary order, then others by name; other axes: numbers
    ascending, then strings by name. Empty when the column is absent.
    """
    if axis not in frame:
        return []
    values = frame[axis].dropna().unique().tolist()
    if axis == "freeze":
        known = [v for v in FREEZE_ORDER if v in values]
        return known + sorted((v for v in values if v not in FREEZE_ORDER), key=str)
    return sorted(values, key=lambda v: (isinstance(v, str), v if not isinstance(v, str)
                                         else 0, str(v)))


@dataclass(frozen=True)
class Scope:
    """A slice of the runs: its name as written in correlations.csv, and which rows."""

    name: str
    axes: dict
    mask: np.ndarray

    @property
    def is_cell(self) -> bool:
        """An optimizer x lr cell (pooled or within a strategy), nothing coarser or finer."""
        return set(CELL_AXES) <= set(self.axes) and not set(self.axes) - set(SCOPE_AXES)


def scopes(runs: pd.DataFrame) -> list[Scope]:
    """all; each freeze; each optimizer x lr; each optimizer x lr x freeze (present ones)."""
    out = [Scope("all", {}, np.ones(len(runs), dtype=bool))]
    axes = [a for a in SCOPE_AXES if a in runs.columns and runs[a].notna().any()]
    values = {a: levels(runs, a) for a in axes}
    masks = {a: {v: (runs[a] == v).to_numpy() for v in values[a]} for a in axes}

    def combos(names: list[str]) -> None:
        if not all(a in axes for a in names):
            return
        grid = [[]]
        for a in names:
            grid = [[*g, (a, v)] for g in grid for v in values[a]]
        for combo in grid:
            mask = np.logical_and.reduce([masks[a][v] for a, v in combo])
            if mask.any():
                out.append(Scope(scope_name(dict(combo)), dict(combo), mask))

    combos(["freeze"])
    combos(list(CELL_AXES))
    combos([*CELL_AXES, "freeze"])
    return out
