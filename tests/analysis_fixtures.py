"""Synthetic result.json records for the analysis tests: the generators live in the library
(``paramcorr.analysis.synthetic``) so benchmarks use them without importing from tests/."""

from paramcorr.analysis.synthetic import (  # noqa: F401  (re-exported for the tests)
    MODELS,
    N_CLASSES,
    make_record,
    synthetic_records,
    truth_records,
    truth_runs,
    write_junk,
    write_record,
    write_sweep,
)
