"""Collecting result.json records: what is read, skipped, counted and how it lands in runs.csv."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from analysis_fixtures import make_record, synthetic_records, write_junk, write_record, write_sweep
from paramcorr.analysis.collect import NoRecordsError, collect_runs
from paramcorr.errors import UserError


def test_reads_every_record_at_any_depth_and_skips_junk(tmp_path):
    records = synthetic_records(24, p_failed=0, p_diverged=0)
    write_sweep(tmp_path / "sweep", records[:12])
    write_sweep(tmp_path / "sweep" / "deeper" / "nested", records[12:])
    expected = write_junk(tmp_path / "sweep")

    col = collect_runs([tmp_path / "sweep"])

    assert col.n_records == 24
    assert col.skipped["invalid JSON"] == expected["invalid JSON"]
    assert col.skipped["not a run record"] == expected["not a run record"]
    assert col.skipped["future schema"] == expected["future schema"]
    assert col.n_temp == expected["temp"]
    # 24 records + 6 junk result.json files; the one under analysis/ is never read
    assert col.n_files == 30
    assert not col.runs["run_dir"].str.contains("analysis").any()
    line = col.summary()
    assert "\n" not in line
    for word in ("24 records", "24 used", "0 failed", "6 skipped", "3 invalid JSON",
                 "1 future schema", "2 not a run record", "2 temp files"):
        assert word in line


def test_failed_runs_listed_diverged_counted(tmp_path):
    records = [make_record("resnet50", seed=0),
               make_record("resnet50", seed=1, status="failed", metrics={}),
               make_record("vgg16", seed=0, status="diverged",
                           metrics={"test_acc": 0.2, "test_loss": None, "gen_acc": "NaN"})]
    write_sweep(tmp_path, records)

    col = collect_runs([tmp_path])

    assert (col.n_records, col.n_used, col.count("failed"), col.count("diverged")) == (3, 2, 1, 1)
    runs = col.runs.set_index("seed")
    failed = col.runs[col.runs["status"] == "failed"].iloc[0]
    assert math.isnan(failed["test_acc"]) and failed["error"].startswith("RuntimeError")
    diverged = col.runs[col.runs["status"] == "diverged"].iloc[0]
    assert diverged["test_acc"] == 0.2
    assert math.isnan(diverged["test_loss"]) and math.isnan(diverged["gen_acc"])
    assert len(runs) == 3


def test_two_sweeps_are_unioned_and_overlap_not_double_counted(tmp_path):
    a = synthetic_records(10, rng_seed=1)
    b = [make_record("densenet121", seed=s, optimizer="sgd") for s in range(5)]
    write_sweep(tmp_path / "a", a)
    write_sweep(tmp_path / "b", b)

    col = collect_runs([tmp_path / "a", tmp_path / "b"])
    assert col.n_records == 15
    assert set(col.runs["config_hash"]) == {r["config_hash"] for r in a + b}

    # a parent and its child given together: each file once
    again = collect_runs([tmp_path, tmp_path / "a"])
    assert again.n_records == 15


def test_rerun_supersedes_failed_record(tmp_path):
    failed = make_record("resnet50", seed=3, status="failed", metrics={})
    done = make_record("resnet50", seed=3)
    write_record(tmp_path / "old" / "0", failed)
    write_record(tmp_path / "new" / "0", done)

    col = collect_runs([tmp_path])

    assert col.n_records == 1 and col.n_superseded == 1
    assert col.runs["status"].tolist() == ["completed"]
    assert "1 superseded" in col.summary()


def test_no_records_is_a_user_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoRecordsError, match="no readable result.json found under") as err:
        collect_runs([tmp_path / "empty"])
    assert isinstance(err.value, UserError) and "\n" not in str(err.value)
    write_record(tmp_path / "junk", "{broken")
    with pytest.raises(NoRecordsError, match="all skipped: 1 invalid JSON"):
        collect_runs([tmp_path / "junk"])
    with pytest.raises(NoRecordsError, match="does not exist"):
        collect_runs([tmp_path / "missing"])


def test_runs_csv_columns_types_and_extra_keys(tmp_path):
    rec = make_record("resnet50", freeze="partial", frozen_stages=2, lr=1e-4,
                      trainable=1000, extra_axis="x1")
    rec["metrics"] = {**rec["metrics"], "top5_acc": 0.99, "confusion": [[1, 0], [0, 1]]}
    rec["timing"]["gpu"] = "H100"
    rec["new_top_level"] = {"ignored": True}
    write_sweep(tmp_path, [rec, make_record("vgg16", lr=1e-2, seed=1)])

    col = collect_runs([tmp_path])
    runs = col.runs

    assert {"run_dir", "log10_trainable", "extra_axis", "top5_acc", "timing_gpu",
            "params_trainable", "status"} <= set(runs.columns)
    assert "top5_acc" in col.metrics and "confusion" not in runs.columns
    assert runs.loc[runs["model"] == "resnet50", "log10_trainable"].item() == pytest.approx(3.0)
    path = tmp_path / "runs.csv"
    runs.to_csv(path, index=False)
    text = pd.read_csv(path, dtype=str)
    assert set(text["lr"]) == {"0.0001", "0.01"}  # repr(float), as scope strings use
    assert text["frozen_stages"].dropna().tolist() == ["2"]
    assert text["seed"].tolist() == ["0", "1"]


def test_foreign_json_variants_are_skipped(tmp_path):
    write_record(tmp_path / "a", json.dumps({"schema": "1", "run": {}, "params": {}}))
    write_record(tmp_path / "b", json.dumps({"schema": 1, "run": [], "params": {}}))
    write_record(tmp_path / "c", json.dumps({"schema": 5, "run": {}, "params": {}}))
    write_record(tmp_path / "d", make_record())
    col = collect_runs([tmp_path])
    assert col.n_records == 1
    assert col.skipped == {"not a run record": 2, "future schema": 1}
