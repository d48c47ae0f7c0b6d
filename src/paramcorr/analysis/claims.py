"""The 2023 study's three claims, tested on a sweep with decision rules fixed in advance.

Every claim is decided on configurations (all run axes but the seed; see
``configurations``), in the optimizer x lr cells pooled over freeze strategies (the cells
of the confirmatory family ``confirmatory: pooled`` of correlations.csv). The verdicts are
one of supported / contradicted / inconclusive; ``claims_text.RULES`` states each decision
rule in words (the report prints them before the numbers), ``FAMILIES`` which correction
each claim uses, and the ``_claim_*`` functions apply exactly those rules. This module
decides; :mod:`paramcorr.analysis.claims_text` says it in words.

Each claim is re-derived with diverged runs left out (``verdict_without_diverged``); where
the two verdicts differ the reason says so and how many runs diverged.

Besides ``CLAIMS_COLUMNS`` (claims.csv) every row carries ``DETAIL_COLUMNS``: the structured
facts the report and the LaTeX table format (which test decided, on how many
configurations, at which alpha, which cells hold...), so nothing downstream parses the
``reason`` prose.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pandas as pd

from paramcorr.analysis.configurations import RUNS_PREFIX
from paramcorr.analysis.contrasts import (  # noqa: F401  (re-exported: tests read them here)
    CI_RESAMPLES,
    DIFF_RESAMPLES,
    contrast_power,
    corr_difference,
    discordant_share,
    fisher_contrast,
    pearson_rows,
    smallest_permutation_p,
)
from paramcorr.analysis.corrections import holm_adjust
from paramcorr.analysis.correlations import pearson_fields
from paramcorr.analysis.power import REFERENCE_R, power_to_detect
from paramcorr.analysis.vocab import (
    ALPHA,
    CELL_AXES,
    CONFIRMATORY_METRICS,
    POOLED,
    X,
    format_value,
    is_number,
    levels,
    scope_name,
    used_mask,
)

CLAIMS_COLUMNS = ["claim", "scope", "statistic", "estimate", "ci_low", "ci_high", "p",
                  "p_holm", "power", "verdict", "reason", "verdict_without_diverged"]
# Structured fields of each row (in memory, not in claims.csv): what the report formats.
#   route: which part of the rule decided (ROUTES); label: the cell in words; metric: the
#   outcome of the deciding statistic; n / n_runs: configurations / runs behind it;
#   n_diverged: diverged runs in the row's scope; alpha: the level its p was compared with;
#   family: the correction it used; cells: per-cell (label, verdict, route) of a summary
#   row; elsewhere: other cells where the same holds (claim c); other: the cell claim c's
#   deciding contrast compares with; n_min / p_min: the smallest
#   cell size and the smallest attainable p of an untestable lag test (claim b);
#   estimate_without_diverged: the deciding estimate with diverged runs left out.
DETAIL_COLUMNS = ["route", "label", "metric", "n", "n_runs", "n_diverged", "alpha", "family",
                  "cells", "elsewhere", "other", "n_min", "p_min",
                  "estimate_without_diverged"]
SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
EVERY_CELL, SOME_CELL = "every optimizer x lr cell", "some optimizer x lr cell"
GEN_PAIRS = (("gen_acc", "test_acc"), ("gen_f1", "test_f1"))
# The study's smallest learning rate: claim c is about Adam there (override: --claim-c-lr).
STUDY_SMALLEST_LR = 1e-4
# Claims b and c need a generalization set; a sweep without one (an image folder without
# data.generalization_root) gets this reason instead of statistics on no data.
NO_GENERALIZATION = ("no generalization set: no usable run has gen_acc or gen_f1 (for image "
                     "folders set data.generalization_root=DIR, a folder with the same classes "
                     "from another distribution)")
CLAIM_B_FAMILY = "claim b: r_gen - r_test"

FAMILIES = {
    "a": f"each cell at alpha {ALPHA} uncorrected for support (intersection-union), Holm over "
         "the cells for a contradiction",
    "b": f"r_gen: Holm within `{POOLED}`; r_gen - r_test: Holm within `{CLAIM_B_FAMILY}` "
         "(every cell x gen metric)",
    "c": f"each part at alpha {ALPHA} for support (intersection-union), Holm over the "
         "contradiction tests",
}
ROUTES = ("positive", "negative", "not significant", "not estimable", "no cells", "falls",
          "lags", "rises", "untestable", "no evidence", "greater", "smaller",
          "not greater", "not positive", "not tested")


def _row(claim: str, scope: str, statistic: str, **values: object) -> dict:
    row = dict.fromkeys(CLAIMS_COLUMNS + DETAIL_COLUMNS, math.nan)
    row.update({"route": "", "label": "", "metric": "", "family": FAMILIES[claim],
                "cells": (), "elsewhere": (), "other": ""})
    row.update(claim=claim, scope=scope, statistic=statistic, **values)
    return row


def _cells(pooled: pd.DataFrame) -> list[tuple[object, float, str]]:
    """(optimizer, lr, scope) of every optimizer x lr cell, in the report's order."""
    cells = pooled.drop_duplicates("scope")
    out = []
    for opt in levels(cells, "optimizer"):
        for lr in levels(cells[cells["optimizer"] == opt], "lr"):
            scope = cells[(cells["optimizer"] == opt) & (cells["lr"] == lr)]["scope"].iloc[0]
            out.append((opt, float(lr), scope))
    return out


def _label(opt: object, lr: float) -> str:
    return f"{opt}, lr={format_value('lr', lr)}"


def _n_phrase(n: object, n_runs: object) -> str:
    runs = f" ({int(n_runs)} runs)" if is_number(n_runs) else ""
    return f"n={int(n) if is_number(n) else 0} configurations{runs}"


def _fp(p: object) -> str:
    return f"{float(p):.2g}" if is_number(p) else "n/a"


def _nanmin(values: list[float]) -> float:
    finite = [v for v in values if is_number(v)]
    return min(finite) if finite else math.nan


def _get(pooled: pd.DataFrame, scope: str, y: str) -> pd.Series | None:
    hit = pooled[(pooled["scope"] == scope) & (pooled["y"] == y)]
    return hit.iloc[0] if len(hit) else None


def confirmatory_cells(configs: pd.DataFrame) -> pd.DataFrame:
    """The ``confirmatory: pooled`` family computed from a configuration table.

    Pearson r of log10 trainable with each paper metric per optimizer x lr cell, Holm over
    the family, as correlation_table builds it (tested equal). Claims use it to re-derive
    their verdicts from configurations rebuilt without diverged runs.
    """
    cols = ["scope", "y", "optimizer", "lr", "n", "n_runs", "r", "p", "ci_low", "ci_high",
            "p_holm", "alpha_holm"]
    metrics = [m for m in CONFIRMATORY_METRICS if m in configs]
    if configs.empty or not set(CELL_AXES) <= set(configs) or not metrics:
        return pd.DataFrame(columns=cols)
    usable = configs[used_mask(configs)]
    rows = []
    for (opt, lr), cell in usable.groupby(list(CELL_AXES), sort=True):
        scope = scope_name(dict(zip(CELL_AXES, (opt, lr), strict=True)))
        x_all = cell[X].to_numpy(dtype=float)
        for m in metrics:
            y_all = cell[m].to_numpy(dtype=float)
            keep = np.isfinite(x_all) & np.isfinite(y_all)
            x, y = x_all[keep], y_all[keep]
            behind = cell[RUNS_PREFIX + m].to_numpy(dtype=float)[keep] \
                if RUNS_PREFIX + m in cell else np.ones(len(x))
            row = {"scope": scope, "y": m, "optimizer": opt, "lr": float(lr), "n": len(x),
                   "n_runs": int(behind.sum()), **pearson_fields(x, y)}
            rows.append(row)
    table = pd.DataFrame(rows, columns=cols[:-2])
    p = table["p"].to_numpy(dtype=float)
    ok = np.isfinite(p)
    table["p_holm"] = np.nan
    table.loc[ok, "p_holm"] = holm_adjust(p[ok])
    table["alpha_holm"] = ALPHA / ok.sum() if ok.any() else math.nan
    return table


def _diverged_in(configs: pd.DataFrame, cells: list) -> dict[str, int]:
    """Diverged runs per cell scope (usable configurations)."""
    out = {}
    usable = configs[used_mask(configs)] if len(configs) else configs
    for opt, lr, scope in cells:
        sub = usable[(usable["optimizer"] == opt) & (usable["lr"] == lr)] if len(usable) \
            else usable
        out[scope] = int(sub["n_diverged"].sum()) if "n_diverged" in sub else 0
    return out


# --- claim a -----------------------------------------------------------------------------

def _a_cell(row: pd.Series, p_holm: float, power: float) -> tuple[str, str, str]:
    """One cell's verdict on claim a, its route and reason (RULES['a'])."""
    n = _n_phrase(row["n"], row["n_runs"])
    if not is_number(row["r"]):
        return INCONCLUSIVE, "not estimable", \
            f"not estimable: {n}, fewer than 3 or a constant variable"
    if row["r"] > 0 and row["p"] < ALPHA:
        return SUPPORTED, "positive", \
            f"r={row['r']:.2f}, {n}: significantly positive (p={_fp(row['p'])})"
    if row["r"] < 0 and p_holm < ALPHA:
        return CONTRADICTED, "negative", (
            f"r={row['r']:.2f}, {n}: significantly negative after Holm over the "
            f"cells (p_holm={_fp(p_holm)})")
    # A cell too small for a power figure (n < 4) says so instead of "nan%".
    power_text = f"{power:.0%}" if is_number(power) else "not computable at this n"
    return INCONCLUSIVE, "not significant", (
        f"r={row['r']:.2f}, {n}: not significant (p={_fp(row['p'])}); power "
        f"to detect r={REFERENCE_R} at alpha {ALPHA}: {power_text}")


def _claim_a(pooled: pd.DataFrame, cells: list, diverged: dict[str, int]) -> list[dict]:
    stat = f"pearson r({X}, test_acc), configurations"
    rows = [_get(pooled, scope, "test_acc") for _, _, scope in cells]
    if not cells or any(r is None for r in rows):
        return [_row("a", EVERY_CELL, stat, verdict=INCONCLUSIVE, route="no cells",
                     reason="no optimizer x lr cell with test_acc to test")]
    p = np.array([r["p"] for r in rows], dtype=float)
    r_all = np.array([r["r"] for r in rows], dtype=float)
    ok = np.isfinite(p) & np.isfinite(r_all)
    holm = np.full(len(rows), np.nan)
    holm[ok] = holm_adjust(p[ok])
    out, summary_cells = [], []
    for (opt, lr, scope), row, ph in zip(cells, rows, holm, strict=True):
        power = power_to_detect(int(row["n"]), REFERENCE_R, ALPHA)
        verdict, route, reason = _a_cell(row, ph, power)
        label = _label(opt, lr)
        summary_cells.append((label, verdict, route))
        out.append(_row("a", scope, stat, estimate=row["r"], ci_low=row["ci_low"],
                        ci_high=row["ci_high"], p=row["p"], p_holm=ph, power=power,
                        verdict=verdict, reason=reason, route=route, label=label,
                        metric="test_acc", n=row["n"], n_runs=row["n_runs"],
                        n_diverged=diverged.get(scope, 0),
                        alpha=ALPHA))
    verdicts = [c[1] for c in summary_cells]
    against = [i for i, v in enumerate(verdicts) if v == CONTRADICTED]
    if all(v == SUPPORTED for v in verdicts):
        overall, route = SUPPORTED, "every cell positive"
    elif against:
        overall, route = CONTRADICTED, "some cell negative"
    else:
        overall, route = INCONCLUSIVE, "not every cell"
    counts = {v: verdicts.count(v) for v in (SUPPORTED, CONTRADICTED, INCONCLUSIVE)}
    reason = (f"{counts[SUPPORTED]} of {len(cells)} cells significantly positive, "
              f"{counts[CONTRADICTED]} significantly negative"
              + (f" ({'; '.join(summary_cells[i][0] for i in against)})" if against else "")
              + f", {counts[INCONCLUSIVE]} inconclusive")
    if against:  # the contradicting cell with the strongest evidence decided
        k = min(against, key=lambda i: holm[i])
        shown = dict(estimate=rows[k]["r"], ci_low=rows[k]["ci_low"],
                     ci_high=rows[k]["ci_high"], p=rows[k]["p"], p_holm=holm[k])
        statistic = "pearson r of the most significant negative cell (p_holm: over cells)"
    else:  # intersection-union: the weakest cell binds, its p is the largest cell p
        k = min(range(len(rows)), key=lambda i: r_all[i] if ok[i] else -math.inf)
        largest = float(np.max(p)) if ok.all() else math.nan
        shown = dict(estimate=rows[k]["r"], ci_low=rows[k]["ci_low"],
                     ci_high=rows[k]["ci_high"], p=largest, p_holm=largest)
        statistic = "smallest cell r (p: largest cell p, the intersection-union test)"
    out.append(_row("a", EVERY_CELL, statistic, **shown,
                    power=_nanmin([r["power"] for r in out]), verdict=overall, reason=reason,
                    route=route, metric="test_acc", n=rows[k]["n"], n_runs=rows[k]["n_runs"],
                    n_diverged=sum(diverged.values()), alpha=ALPHA,
                    cells=tuple(summary_cells), label=_label(cells[k][0], cells[k][1])))
    return out


# --- claim b -----------------------------------------------------------------------------

def _comparisons(pooled: pd.DataFrame, configs: pd.DataFrame, cells: list, seed: int,
                 cache: dict | None = None) -> pd.DataFrame:
    """Every cell x (gen, test) pair: r_gen and r_test, the difference and its tests.

    ``cache`` keeps each difference by its data: a cell without diverged runs has the same
    configurations with and without them, so its resampling runs once.
    """
    cache = {} if cache is None else cache
    rows = []
    usable = configs[used_mask(configs)] if len(configs) else configs
    for opt, lr, scope in cells:
        sub = usable[(usable["optimizer"] == opt) & (usable["lr"] == lr)]
        for gen, test in GEN_PAIRS:
            g, t = _get(pooled, scope, gen), _get(pooled, scope, test)
            if g is None or gen not in sub or test not in sub:
                continue
            row = {"scope": scope, "optimizer": opt, "lr": lr, "gen": gen, "test": test,
                   "r_gen": g["r"], "r_gen_low": g["ci_low"], "r_gen_high": g["ci_high"],
                   "p_gen": g["p"], "p_holm_gen": g["p_holm"],
                   "alpha_holm_gen": g.get("alpha_holm", math.nan),
                   "r_test": t["r"] if t is not None else math.nan,
                   "n": g["n"], "n_runs": g["n_runs"], "n_diff": 0, "diff": math.nan,
                   "ci_low": math.nan, "ci_high": math.nan, "p_diff": math.nan,
                   "discordant": math.nan}
            data = sub[[X, gen, test]].to_numpy(dtype=float)
            data = data[np.isfinite(data).all(axis=1)]
            if len(data) >= 4 and np.ptp(data, axis=0).min() > 0:
                key = (seed, scope, gen, data.tobytes())
                if key not in cache:
                    rng = np.random.default_rng([seed, zlib.crc32(f"{scope}|{gen}".encode())])
                    cache[key] = corr_difference(*data.T, rng)
                diff, low, high, p = cache[key]
                row.update(n_diff=len(data), diff=diff, ci_low=low, ci_high=high, p_diff=p,
                           discordant=discordant_share(data[:, 0], data[:, 1]))
            rows.append(row)
    table = pd.DataFrame(rows)
    if len(table):
        p = table["p_diff"].to_numpy(dtype=float)
        ok = np.isfinite(p)
        table["p_holm_diff"] = np.nan
        table["p_min"] = [smallest_permutation_p(int(n)) if o else math.nan
                          for n, o in zip(table["n_diff"], ok, strict=True)]
        table["testable"] = False
        if ok.any():
            table.loc[ok, "p_holm_diff"] = holm_adjust(p[ok])
            # Holm is monotone in every p: a comparison that is not rejected even when every
            # comparison reaches its smallest attainable p can never be rejected at this n.
            best = holm_adjust(table.loc[ok, "p_min"].to_numpy(dtype=float))
            table.loc[ok, "testable"] = best < ALPHA
    return table


def _sig(p: object) -> bool:
    return is_number(p) and float(p) < ALPHA


def _b_flags(comp: pd.DataFrame) -> pd.DataFrame:
    def each(fn):
        return [fn(r) for r in comp.itertuples()]

    return comp.assign(
        falls=each(lambda c: _sig(c.p_holm_gen) and c.r_gen < 0 and _sig(c.p_diff)
                   and c.diff < 0),
        lags=each(lambda c: not (_sig(c.p_gen) and c.r_gen > 0) and _sig(c.p_holm_diff)
                  and c.diff < 0),
        rises=each(lambda c: _sig(c.p_holm_gen) and c.r_gen > 0))


def _b_r_gen(c: pd.Series) -> dict:
    return dict(statistic=f"pearson r({X}, {c['gen']}), configurations",
                estimate=c["r_gen"], ci_low=c["r_gen_low"], ci_high=c["r_gen_high"],
                p=c["p_gen"], p_holm=c["p_holm_gen"], metric=c["gen"], n=c["n"],
                n_runs=c["n_runs"], alpha=ALPHA,
                power=power_to_detect(int(c["n"]), REFERENCE_R, float(c["alpha_holm_gen"]))
                if is_number(c["alpha_holm_gen"]) else math.nan)


def _b_diff(c: pd.Series) -> dict:
    return dict(statistic=f"r({c['gen']}) - r({c['test']}), paired permutation test over "
                "configurations (CI: paired bootstrap)",
                estimate=c["diff"], ci_low=c["ci_low"], ci_high=c["ci_high"], p=c["p_diff"],
                p_holm=c["p_holm_diff"], metric=c["gen"], n=c["n"], n_runs=c["n_runs"],
                alpha=ALPHA, power=0.0 if not c["testable"] else math.nan,
                p_min=c["p_min"], n_min=c["n_diff"])


def _b_phrase(c: pd.Series) -> str:
    diff = (f"r_gen - r_test = {c['diff']:.2f} [{c['ci_low']:.2f}, {c['ci_high']:.2f}], "
            f"p={_fp(c['p_diff'])}, p_holm={_fp(c['p_holm_diff'])}"
            if is_number(c["diff"]) and is_number(c["ci_low"]) else "difference not estimable")
    disc = f"; discordant pairs {c['discordant']:.0%}" if is_number(c["discordant"]) else ""
    r_gen = (f"r={c['r_gen']:.2f} (p={_fp(c['p_gen'])}, p_holm={_fp(c['p_holm_gen'])})"
             if is_number(c["r_gen"]) else "r not estimable")
    return f"{c['gen']}: {r_gen}; {diff}{disc}"


def _untestable_phrase(c: pd.Series, m: int) -> str:
    return (f"the lag test cannot be tested with {int(c['n_diff'])} configurations (its "
            f"smallest attainable p, {_fp(c['p_min'])}, cannot pass Holm over {m} "
            "comparisons)")


def _b_cell(scope: str, grp: pd.DataFrame, m: int) -> dict:
    """One cell's verdict, route, deciding statistic and reason (RULES['b'])."""
    falls, lags = grp[grp["falls"]], grp[grp["lags"]]
    ok = grp[grp["p_diff"].notna()]
    if len(falls):
        c = falls.sort_values("p_holm_gen").iloc[0]
        return dict(verdict=SUPPORTED, route="falls", **_b_r_gen(c),
                    why=f"{c['gen']} falls significantly as trainable grows (r={c['r_gen']:.2f}"
                        f", p_holm={_fp(c['p_holm_gen'])}), and relative to {c['test']} "
                        f"(r_gen - r_test = {c['diff']:.2f}, p={_fp(c['p_diff'])})")
    if len(lags):
        c = lags.sort_values("p_holm_diff").iloc[0]
        return dict(verdict=SUPPORTED, route="lags", **_b_diff(c),
                    why=f"{c['gen']} is not significantly positive and its correlation is "
                        f"significantly below {c['test']}'s (r_gen - r_test = "
                        f"{c['diff']:.2f}, p_holm={_fp(c['p_holm_diff'])})")
    if len(grp) == len(GEN_PAIRS) and grp["rises"].all():
        c = grp.sort_values("p_holm_gen").iloc[-1]
        return dict(verdict=CONTRADICTED, route="rises", **_b_r_gen(c),
                    why="both generalization scores rise significantly (weaker: "
                        f"{c['gen']} r={c['r_gen']:.2f}, p_holm={_fp(c['p_holm_gen'])})")
    if len(ok) and not ok["testable"].any():
        c = ok.sort_values("p_diff").iloc[0]
        return dict(verdict=INCONCLUSIVE, route="untestable", **_b_diff(c),
                    why="no significant fall or rise of generalization; "
                        + _untestable_phrase(c, m))
    if len(ok):
        c = ok.sort_values(["p_holm_diff", "p_diff"]).iloc[0]
        return dict(verdict=INCONCLUSIVE, route="no evidence", **_b_diff(c),
                    why="no significant fall, lag or rise of generalization")
    c = grp.iloc[0]
    return dict(verdict=INCONCLUSIVE, route="not estimable", **_b_r_gen(c),
                why="the difference r_gen - r_test is not estimable (fewer than 4 "
                    "configurations or a constant variable)")


def _claim_b(pooled: pd.DataFrame, configs: pd.DataFrame, cells: list, seed: int,
             diverged: dict[str, int], cache: dict) -> tuple[list[dict], pd.DataFrame]:
    comp = _comparisons(pooled, configs, cells, seed, cache)
    if comp.empty:
        return [_row("b", SOME_CELL, "r(gen) - r(test)", verdict=INCONCLUSIVE,
                     route="no cells",
                     reason="no cell with both generalization and test metrics")], comp
    comp = _b_flags(comp)
    m = int(comp["p_diff"].notna().sum())
    out, decided = [], []
    labels = {scope: _label(o, lr) for o, lr, scope in cells}
    for scope, grp in comp.groupby("scope", sort=False):
        cell = _b_cell(scope, grp, m)
        why = cell.pop("why")
        statistic = cell.pop("statistic")
        n = grp.iloc[0]
        reason = (f"{why}; {_n_phrase(n['n'], n['n_runs'])}; "
                  + " | ".join(_b_phrase(r) for _, r in grp.iterrows()))
        row = _row("b", scope, statistic, reason=reason, label=labels[scope],
                   n_diverged=diverged.get(scope, 0), **cell)
        out.append(row)
        decided.append(row)
    verdicts = [r["verdict"] for r in decided]
    summary_cells = tuple((r["label"], r["verdict"], r["route"]) for r in decided)
    k_sup, k_con = verdicts.count(SUPPORTED), verdicts.count(CONTRADICTED)
    if k_sup:
        overall, route = SUPPORTED, "some cell"
        best = min((r for r in decided if r["verdict"] == SUPPORTED),
                   key=lambda r: r["p_holm"] if is_number(r["p_holm"]) else math.inf)
    elif verdicts and k_con == len(verdicts):
        overall, route = CONTRADICTED, "every cell rises"
        best = max(decided, key=lambda r: r["p_holm"] if is_number(r["p_holm"]) else math.inf)
    else:
        overall = INCONCLUSIVE
        untestable = [r for r in decided if r["route"] == "untestable"]
        route = "untestable" if untestable and len(untestable) == len(decided) - k_con \
            else "no evidence"
        best = min(decided, key=lambda r: r["p_holm"] if is_number(r["p_holm"]) else math.inf)
    disc = comp["discordant"].dropna()
    reason = (f"{k_sup} of {len(decided)} cells support b, {k_con} contradict it"
              + (f"; discordant pairs per cell and metric: {disc.min():.0%} to {disc.max():.0%}"
                 if len(disc) else ""))
    if route == "untestable":
        worst = comp[comp["p_diff"].notna()].sort_values("p_min").iloc[0]
        reason += "; in the other cells " + _untestable_phrase(worst, m)
    shown = {k: best[k] for k in ("estimate", "ci_low", "ci_high", "p", "p_holm", "power",
                                  "metric", "n", "n_runs", "alpha", "p_min", "n_min")}
    out.append(_row("b", SOME_CELL, f"{best['statistic']} in {best['label']} (the deciding "
                    "cell)", **shown, verdict=overall, route=route, reason=reason,
                    label=best["label"], cells=summary_cells,
                    n_diverged=sum(diverged.values())))
    return out, comp.drop(columns=["falls", "lags", "rises"])


# --- claim c -----------------------------------------------------------------------------

def _c_tests(pooled: pd.DataFrame, cells: list, target: tuple) -> tuple[list[dict], tuple]:
    """Per gen metric: the cell's r test and its contrast with every other cell."""
    opt, lr, scope = target
    tests = []
    for gen, _ in GEN_PAIRS:
        row = _get(pooled, scope, gen)
        if row is None:
            continue
        n = int(row["n"])
        tests.append(dict(kind="r", metric=gen, estimate=row["r"], ci_low=row["ci_low"],
                          ci_high=row["ci_high"], p=row["p"], n=n, n_runs=row["n_runs"],
                          power=power_to_detect(n, REFERENCE_R, ALPHA),
                          statistic=f"pearson r({X}, {gen}), configurations"))
        pairs = []
        for o, v, other in cells:
            hit = _get(pooled, other, gen)
            if other == scope or hit is None or not is_number(hit["r"]):
                continue
            pairs.append((_label(o, v), int(hit["n"]),
                          fisher_contrast(row["r"], n, hit["r"], int(hit["n"]))))
        pairs = [pr for pr in pairs if is_number(pr[2][0])]
        # Above every other cell <=> the smallest pairwise z statistic passes; below every
        # other cell <=> the largest does. The binding pair is shown with its own numbers.
        z = [pr[2][0] / math.sqrt(1 / (n - 3) + 1 / (pr[1] - 3)) for pr in pairs]
        for kind, pick in (("above", np.argmin), ("below", np.argmax)):
            test = dict(kind=kind, metric=gen, n=n, n_runs=row["n_runs"], estimate=math.nan,
                        ci_low=math.nan, ci_high=math.nan, p=math.nan, other="",
                        power=contrast_power(n, [pr[1] for pr in pairs]),
                        statistic=f"Fisher z of r({X}, {gen}) minus the "
                                  f"closest other cell's (is it {kind} every other cell?)")
            if pairs:
                k = int(pick(z))
                d, low, high, p_pair = pairs[k][2]
                test.update(estimate=d, ci_low=low, ci_high=high, p=p_pair,
                            other=pairs[k][0])
            tests.append(test)
    elsewhere = []
    for o, v, other in cells:
        if other == scope:
            continue
        rows = [_get(pooled, other, gen) for gen, _ in GEN_PAIRS]
        rows = [r for r in rows if r is not None]
        if rows and all(is_number(r["r"]) and r["r"] > 0 and r["p"] < ALPHA for r in rows):
            elsewhere.append(_label(o, v))
    return tests, tuple(elsewhere)


def _claim_c_target(cells: list, claim_c_lr: float | None) -> tuple[tuple | None, str, str]:
    """The cell claim c tests, or None with why not, and the wanted cell's label."""
    adam = [(o, lr, s) for o, lr, s in cells if str(o).lower() == "adam"]
    want = STUDY_SMALLEST_LR if claim_c_lr is None else float(claim_c_lr)
    hit = [c for c in adam if math.isclose(c[1], want, rel_tol=1e-9)]
    wanted = _label("adam", want)
    if hit:
        return hit[0], "", wanted
    if not adam:
        return None, "not tested: no Adam runs in this sweep", wanted
    have = ", ".join(format_value("lr", c[1]) for c in adam)
    if claim_c_lr is None:
        return None, (f"not tested: no Adam run at lr={format_value('lr', want)}, the "
                      f"study's smallest learning rate (Adam cells here: lr={have}); name "
                      "the cell to test with --claim-c-lr"), wanted
    return None, (f"not tested: no Adam run at --claim-c-lr {format_value('lr', want)} "
                  f"(Adam cells here: lr={have})"), wanted


def _c_decide(tests: list[dict]) -> tuple[str, str, dict]:
    """Claim c's verdict, route and the test that decided it (RULES['c']); sets the tests'
    ``p_holm``."""
    # support: every part positive and significant at alpha (intersection-union)
    parts = [t for t in tests if t["kind"] in ("r", "above")]
    support = [t for t in parts if is_number(t["estimate"]) and t["estimate"] > 0
               and _sig(t["p"])]
    # contradiction: some part negative and significant after Holm over these tests
    union = [t for t in tests if t["kind"] in ("r", "below") and is_number(t["p"])]
    against = [t for t in union if t["estimate"] < 0]
    if union:
        for t, ph in zip(union, holm_adjust(np.array([t["p"] for t in union])),
                         strict=True):
            t["p_holm"] = float(ph)
    against = [t for t in against if _sig(t.get("p_holm"))]
    n_gen = sum(t["kind"] == "r" for t in tests)
    has_contrast = any(t["kind"] == "above" and is_number(t["estimate"]) for t in tests)
    if len(support) == len(parts) and n_gen == len(GEN_PAIRS) and has_contrast:
        verdict, route = SUPPORTED, "greater"
        shown = max(parts, key=lambda t: t["p"])  # the weakest part binds
        shown["p_holm"] = shown["p"]
    elif against:
        verdict = CONTRADICTED
        shown = min(against, key=lambda t: t["p_holm"])
        route = "negative" if shown["kind"] == "r" else "smaller"
    else:
        verdict = INCONCLUSIVE
        failed = [t for t in parts if t not in support]
        # the part that failed: a cell r first (the contrast matters only for a positive r)
        shown = min(failed or parts, key=lambda t: (t["kind"] != "r", -(t["p"] if is_number(
            t["p"]) else math.inf)))
        if not has_contrast:
            route = "not tested"
        else:
            route = "not positive" if shown["kind"] == "r" else "not greater"
        shown["p_holm"] = shown["p"]
    return verdict, route, shown


def _c_reason(tests: list[dict], verdict: str, route: str, shown: dict, label: str,
              elsewhere: tuple) -> str:
    """Claim c's reason: the route in words, then every test's numbers."""
    words = []
    for t in tests:
        if t["kind"] == "r":
            words.append(f"{t['metric']}: r={t['estimate']:.2f} (p={_fp(t['p'])})"
                         if is_number(t["estimate"]) else f"{t['metric']}: r not estimable")
        elif t["kind"] == "above" and is_number(t["estimate"]):
            words.append(f"against the closest other cell ({t['other']}) Fisher z "
                         f"difference {t['estimate']:.2f} (p={_fp(t['p'])})")
    reason = {"greater": f"in {label} the gen correlations are significantly positive and "
                         "significantly above every other cell's",
              "negative": f"in {label} {shown['metric']} falls significantly",
              "smaller": f"in {label} {shown['metric']} correlates significantly below every "
                         "other cell",
              "not positive": f"in {label} {shown['metric']} is not significantly positive",
              "not greater": f"in {label} {shown['metric']} is not significantly above every "
                             "other cell",
              "not tested": f"in {label} no other cell to contrast with"}[route]
    reason += f"; {_n_phrase(shown['n'], shown['n_runs'])}; " + "; ".join(words)
    if elsewhere:
        reason += "; gen also rises significantly in " + "; ".join(elsewhere)
    if verdict == INCONCLUSIVE and is_number(shown["power"]):
        reason += f"; power of that test to detect r={REFERENCE_R}: {shown['power']:.0%}"
    return reason


def _claim_c(pooled: pd.DataFrame, cells: list, diverged: dict[str, int],
             claim_c_lr: float | None) -> list[dict]:
    target, why_not, wanted = _claim_c_target(cells, claim_c_lr)
    if target is None:
        return [_row("c", "optimizer=adam", "not tested", verdict=INCONCLUSIVE,
                     route="not tested", reason=why_not, label=wanted)]
    opt, lr, scope = target
    label = _label(opt, lr)
    tests, elsewhere = _c_tests(pooled, cells, target)
    common = dict(label=label, elsewhere=elsewhere, n_diverged=diverged.get(scope, 0))
    if not tests:
        return [_row("c", scope, "not tested", verdict=INCONCLUSIVE, route="not tested",
                     reason="no generalization metric in this sweep", **common)]
    verdict, route, shown = _c_decide(tests)
    reason = _c_reason(tests, verdict, route, shown, label, elsewhere)
    return [_row("c", scope, shown["statistic"], estimate=shown["estimate"],
                 ci_low=shown["ci_low"], ci_high=shown["ci_high"], p=shown["p"],
                 p_holm=shown["p_holm"], power=shown["power"],
                 verdict=verdict, reason=reason, route=route, metric=shown["metric"],
                 n=shown["n"], n_runs=shown["n_runs"], alpha=ALPHA,
                 other=shown.get("other", ""), **common)]


# --- all claims --------------------------------------------------------------------------

def pooled_rows(corr: pd.DataFrame) -> pd.DataFrame:
    """The confirmatory pooled family: Pearson on configurations, optimizer x lr cells."""
    return corr[(corr["family"] == POOLED) & (corr["method"] == "pearson")]


def _evaluate(pooled: pd.DataFrame, configs: pd.DataFrame, seed: int,
              claim_c_lr: float | None, cache: dict) -> tuple[list[dict], pd.DataFrame]:
    cells = _cells(pooled) if len(pooled) else []
    diverged = _diverged_in(configs, cells)
    if has_generalization(configs):
        b_rows, comparisons = _claim_b(pooled, configs, cells, seed, diverged, cache)
        c_rows = _claim_c(pooled, cells, diverged, claim_c_lr)
    else:
        b_rows = [_row("b", SOME_CELL, "r(gen) - r(test)", verdict=INCONCLUSIVE,
                       route="not tested", reason=NO_GENERALIZATION)]
        c_rows = [_row("c", "optimizer=adam", "not tested", verdict=INCONCLUSIVE,
                       route="not tested", reason=NO_GENERALIZATION)]
        comparisons = pd.DataFrame()
    return _claim_a(pooled, cells, diverged) + b_rows + c_rows, comparisons


def has_generalization(configs: pd.DataFrame) -> bool:
    """Whether any configuration has a finite generalization score (claims b and c need one)."""
    gens = [gen for gen, _ in GEN_PAIRS if gen in configs]
    return bool(gens) and bool(np.isfinite(configs[gens].to_numpy(dtype=float)).any())


def decide_a(pooled: pd.DataFrame) -> list[dict]:
    """Claim a's rows (cells, then the summary) from a ``confirmatory: pooled`` table."""
    return _claim_a(pooled, _cells(pooled) if len(pooled) else [], {})


def decide_c(pooled: pd.DataFrame, claim_c_lr: float | None = None) -> dict:
    """Claim c's row from a ``confirmatory: pooled`` table."""
    return _claim_c(pooled, _cells(pooled) if len(pooled) else [], {}, claim_c_lr)[0]


def _flag_divergence(rows: list[dict], without: list[dict]) -> None:
    """verdict_without_diverged on every row; where it differs, the reason says why."""
    other = {(r["claim"], r["scope"]): r for r in without}
    for row in rows:
        alt = other.get((row["claim"], row["scope"]))
        row["verdict_without_diverged"] = alt["verdict"] if alt else INCONCLUSIVE
        row["estimate_without_diverged"] = alt["estimate"] if alt else math.nan
        if row["verdict_without_diverged"] != row["verdict"]:
            k = int(row["n_diverged"]) if is_number(row["n_diverged"]) else 0
            est = (f" (estimate {alt['estimate']:.2f} instead of {row['estimate']:.2f})"
                   if alt and is_number(alt["estimate"]) and is_number(row["estimate"])
                   else "")
            row["reason"] += (f"; decided by divergence: without the {k} diverged runs "
                              f"the verdict is {row['verdict_without_diverged']}{est}")


def evaluate_claims(corr: pd.DataFrame, configs: pd.DataFrame, seed: int = 0,
                    completed: pd.DataFrame | None = None,
                    claim_c_lr: float | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """claims (CLAIMS_COLUMNS + DETAIL_COLUMNS) and claim b's per-cell comparison table.

    ``corr`` is correlation_table's output; ``configs`` the configuration means
    (``configuration_means``) of the same runs; ``completed`` the configuration means of
    the completed runs only (``statuses=("completed",)``), from which every verdict is
    re-derived without diverged runs. Without ``completed``, ``verdict_without_diverged``
    equals ``verdict`` when no run diverged and is left empty when some did (means over
    diverged runs cannot be taken apart again).
    ``claim_c_lr``: the Adam learning rate claim c tests (default the study's smallest).
    """
    pooled = pooled_rows(corr)
    cache: dict = {}
    rows, comparisons = _evaluate(pooled, configs, seed, claim_c_lr, cache)
    any_diverged = len(configs) and "n_diverged" in configs and configs["n_diverged"].sum() > 0
    if any_diverged and completed is not None:
        without, _ = _evaluate(confirmatory_cells(completed), completed, seed, claim_c_lr,
                               cache)
    elif any_diverged:
        without = []  # not re-derivable: say so rather than copy the verdict
    else:
        without = rows
    if any_diverged and completed is None:
        for row in rows:
            row["verdict_without_diverged"] = math.nan
    else:
        _flag_divergence(rows, without)
    return pd.DataFrame(rows, columns=CLAIMS_COLUMNS + DETAIL_COLUMNS), comparisons
