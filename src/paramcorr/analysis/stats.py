"""The analysis's statistics, one import away: the names of the modules that hold them.

Split by concept (issue 18); this module keeps ``paramcorr.analysis.stats`` importable for
tests, scripts and notebooks that read these names here:

- :mod:`~paramcorr.analysis.vocab`: x variable, alpha, axes, levels, scopes, metric roles;
- :mod:`~paramcorr.analysis.rank_stats`: batched Spearman / Kendall and their bootstrap CIs;
- :mod:`~paramcorr.analysis.correlations`: the correlation table (correlations.csv);
- :mod:`~paramcorr.analysis.corrections`: correction families, Holm and BH;
- :mod:`~paramcorr.analysis.power`: critical and detectable |r|, power columns;
- :mod:`~paramcorr.analysis.models`: strategy vs count, partial / rm correlation, regression;
- :mod:`~paramcorr.analysis.tables`: the paper table, divergence, seed spread.
"""

from __future__ import annotations

# Re-exports only: every name below is defined in the module it is imported from.
from paramcorr.analysis.corrections import (  # noqa: F401
    adjust_pvalues,
    families,
    family_sizes,
    holm_adjust,
)
from paramcorr.analysis.correlations import (  # noqa: F401
    EXTRA_COLUMNS,
    NO_RUN_CI,
    correlation_table,
    pearson_fields,
)
from paramcorr.analysis.models import (  # noqa: F401
    partial_correlations,
    regression,
    rm_correlations,
    strategy_vs_count,
)
from paramcorr.analysis.power import add_power, critical_r, detectable_r, power_table  # noqa: F401
from paramcorr.analysis.rank_stats import (  # noqa: F401
    BATCH_CELLS,
    BCA_MAX_N,
    BOOT_MIN_RESAMPLES,
    BOOT_WORK,
    DEGENERATE_MAX_SHARE,
    bootstrap_ci,
    bootstrap_rng,
    kendall_codes,
    n_resamples_for,
    spearman_codes,
)
from paramcorr.analysis.tables import (  # noqa: F401
    PAPER_FIELDS,
    divergence_table,
    paper_table,
    seed_spread,
)
from paramcorr.analysis.vocab import (  # noqa: F401
    ALPHA,
    CONFIDENCE,
    CONFIRMATORY_METRICS,
    CORR_COLUMNS,
    EXPLORATORY,
    FREEZE_ORDER,
    METHODS,
    MODEL_METRICS,
    POOLED,
    SCOPE_AXES,
    UNITS,
    Scope,
    X,
    format_value,
    is_number,
    levels,
    scopes,
    used_mask,
)
