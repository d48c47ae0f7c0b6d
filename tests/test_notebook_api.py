"""paramcorr.load_runs: the runs.csv table, in a notebook, without running the analysis."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

import paramcorr
from analysis_fixtures import synthetic_records, write_junk, write_sweep
from paramcorr.analysis import run_analysis
from paramcorr.errors import UserError


def test_load_runs_equals_the_analysis_runs_csv(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    records = synthetic_records(16, models=("resnet50", "densenet121"), lrs=(1e-3,),
                                p_failed=0.2, p_diverged=0.2, rng_seed=3)
    write_sweep(first, records[:10])
    write_sweep(second, records[10:])
    write_junk(first)  # skipped, as the analysis skips them
    result = run_analysis([first, second], tmp_path / "out", n_boot=0)
    from_csv = pd.read_csv(result.files["runs"])
    runs = paramcorr.load_runs(str(first), second)
    assert len(runs) == 16 and set(runs["status"]) == {"completed", "diverged", "failed"}
    assert list(runs.columns) == list(from_csv.columns)
    # Typed columns: numbers are numbers (a CSV round trip only re-reads them).
    assert pd.api.types.is_float_dtype(runs["test_acc"])
    assert pd.api.types.is_integer_dtype(runs["params_trainable"])
    # Same values; an empty cell is None in the table and NaN once read back from CSV.
    pd.testing.assert_frame_equal(runs.reset_index(drop=True).mask(runs.isna()), from_csv,
                                  check_dtype=False)


def test_load_runs_of_a_missing_dir_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        paramcorr.load_runs(tmp_path / "nope")


def test_import_paramcorr_stays_light():
    code = ("import sys, paramcorr; "
            "print(sorted({'pandas', 'torch', 'matplotlib'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
