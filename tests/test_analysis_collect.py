"""Collecting result.json records: what is read, skipped, counted and how it lands in runs.csv."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from analysis_fixtures import make_record, synthetic_records, write_junk, write_record, write_sweep
from paramcorr.analysis.collect import NoRecordsError, collect_runs
from paramcorr.errors import UserError
from paramcorr.record import (
    METRIC_KEYS,
    RUN_AXES,
    TIMING_KEYS,
    RecordError,
    RunRecord,
    Status,
    load_record,
)
from paramcorr.strategy_names import STRATEGY_TERMS


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


def _without_model(rec):
    del rec["run"]["model"]


def _set(path, value):
    """A mutator putting ``value`` at the dotted ``path`` of a record."""
    *parents, last = path.split(".")

    def mutate(rec):
        target = rec
        for key in parents:
            target = target[key]
        target[last] = value
    return mutate


# One foreign record among good ones: what it breaks, and the reason it is counted under.
FOREIGN = {
    "missing run.model": (_without_model, "run.model missing"),
    "string count": (_set("params.trainable", "10245"), "params.trainable is not a count"),
    "400-digit count": (_set("params.total", 10**400), "params.total is not a count"),
    "negative count": (_set("params.frozen", -1), "params.frozen is not a count"),
    "metrics as a list": (_set("metrics", [0.5, 0.4]), "metrics is not an object"),
    "run as a string": (_set("run", "resnet50"), "run is not an object"),
    "unknown status": (_set("status", "running"), "unknown status"),
    "400-digit metric": (_set("metrics.test_acc", 10**400), "metrics.test_acc is not a number"),
    "text metric": (_set("metrics.gen_f1", "high"), "metrics.gen_f1 is not a number"),
    "seed as text": (_set("run.seed", "zero"), "run.seed is not a number"),
    "lr as a list": (_set("run.lr", [0.1]), "run.lr is not a number"),
    "optimizer as a number": (_set("run.optimizer", 3), "run.optimizer is not text"),
    "params as a number": (_set("params", 7), "params is not an object"),
    "no config_hash": (_set("config_hash", None), "config_hash missing"),
    "timing as text": (_set("timing", "fast"), "timing is not an object"),
    "400-digit schema": (_set("schema", 10**400), "not a run record"),
    "epochs_configured as text": (_set("run.epochs_configured", "10"),
                                  "run.epochs_configured is not an integer"),
    "steps as a fraction": (_set("run.steps", 2.5), "run.steps is not an integer"),
    "gen_loss as a list": (_set("metrics.gen_loss", [0.1]), "metrics.gen_loss is not a number"),
}


@pytest.mark.parametrize("case", list(FOREIGN))
def test_a_foreign_record_is_skipped_with_its_reason(tmp_path, case):
    mutate, reason = FOREIGN[case]
    good = synthetic_records(12, p_failed=0, p_diverged=0)
    write_sweep(tmp_path / "good", good)
    write_sweep(tmp_path / "mixed", good)
    bad = make_record("vgg16", seed=7)
    mutate(bad)
    write_record(tmp_path / "mixed" / "foreign", json.dumps(bad))

    col = collect_runs([tmp_path / "mixed"])
    reference = collect_runs([tmp_path / "good"])  # the same good records, nothing foreign

    assert col.skipped == {reason: 1} and col.n_files == 13 and col.n_records == 12
    assert f"1 skipped (1 {reason})" in col.summary()
    # the good records land exactly as they would alone (only their directories differ)
    pd.testing.assert_frame_equal(col.runs.drop(columns="run_dir"),
                                  reference.runs.drop(columns="run_dir"))


def test_every_foreign_record_at_once_is_counted_per_reason(tmp_path):
    write_sweep(tmp_path, synthetic_records(12, p_failed=0, p_diverged=0))
    for i, (mutate, _) in enumerate(FOREIGN.values()):
        bad = make_record("vgg16", seed=100 + i)
        mutate(bad)
        write_record(tmp_path / f"foreign{i}", json.dumps(bad))
    write_record(tmp_path / "deep", "[" * 100_000 + "]" * 100_000)  # json recursion limit

    col = collect_runs([tmp_path])

    expected = Counter(reason for _, reason in FOREIGN.values())
    expected["invalid JSON"] += 1
    assert col.skipped == expected and col.n_records == 12


def test_failed_record_may_lack_what_the_run_never_reached(tmp_path):
    # A job refused before its run axes or parameter counts existed still records its failure.
    early = {**make_record(status="failed", metrics={}), "run": {}, "params": None}
    partial = make_record("vgg16", status="failed", metrics={})
    partial["params"] = {"total": 10, "trainable": None, "frozen": None}
    write_record(tmp_path / "early", json.dumps(early))
    write_record(tmp_path / "partial", json.dumps(partial))
    write_record(tmp_path / "ok", json.dumps(make_record("resnet50")))

    col = collect_runs([tmp_path])

    assert col.n_skipped == 0 and col.count("failed") == 2 and col.n_used == 1


def test_nonfinite_metrics_are_kept_as_nan_not_skipped(tmp_path):
    rec = make_record(status="diverged")
    rec["metrics"].update(train_loss=math.inf, test_loss="Infinity", val_loss=math.nan,
                          gen_acc="-inf")
    write_record(tmp_path / "0", json.dumps(rec))  # json writes NaN / Infinity literals

    row = collect_runs([tmp_path]).runs.iloc[0]

    assert math.isinf(row["train_loss"]) and math.isinf(row["test_loss"])
    assert math.isnan(row["val_loss"]) and row["gen_acc"] == -math.inf
    assert row["test_acc"] == 0.0


def test_names_colliding_with_columns_keep_both_values(tmp_path):
    # a run axis named "status" and a metric named like another record's run axis
    a = make_record("resnet50", seed=0, status="completed")
    a["run"]["status"] = "pending"
    b = make_record("vgg16", seed=1, flavour="x")
    b["metrics"]["flavour"] = 0.25
    a["metrics"]["flavour"] = 0.5
    write_sweep(tmp_path, [a, b])

    runs = collect_runs([tmp_path]).runs.set_index("model")

    assert runs.loc["resnet50", "status"] == "completed"
    assert runs.loc["resnet50", "run_status"] == "pending"
    assert runs.loc["vgg16", "flavour"] == "x"
    assert runs["metric_flavour"].tolist() == [0.5, 0.25]


def test_huge_integer_in_an_extra_axis_stays_exact(tmp_path):
    write_sweep(tmp_path, [make_record(seed=0, tag=10**30), make_record(seed=1, tag=3)])
    runs = collect_runs([tmp_path]).runs
    assert runs["tag"].tolist() == [10**30, 3]


def _analysis_outputs(out: Path) -> None:
    """What an earlier analysis leaves in its --out: tables, report, plots, a stray temp."""
    (out / "plots").mkdir(parents=True, exist_ok=True)
    for name in ("runs.csv", "correlations.csv", "claims.csv", "report.md"):
        (out / name).write_text("x\n")
    (out / "plots" / "scatter_test_acc.png").write_bytes(b"\x89PNG")
    (out / ".runs.csv.k2j3.tmp").write_text("x")  # an interrupted atomic write of ours
    (out / "plots" / ".heatmap.png.a1.tmp").write_text("x")


@pytest.mark.parametrize("out", ["a", ".", "a/0", "a/sub/analysis", "a/sub/report"])
def test_out_inside_a_sweep_hides_no_run(tmp_path, out):
    records = synthetic_records(24, p_failed=0, p_diverged=0)
    write_sweep(tmp_path / "a", records[:12])
    write_sweep(tmp_path / "a" / "sub", records[12:], start=100)
    write_sweep(tmp_path / "b", [make_record("densenet121", seed=s) for s in range(3)])
    out_dir = tmp_path / out
    _analysis_outputs(out_dir)

    col = collect_runs([tmp_path / "a", tmp_path / "b"], out_dirs=[out_dir, out_dir / "plots"])

    assert col.n_records == 27 and col.n_skipped == 0 and col.n_temp == 0
    # the analysis's temp files are its own; a job's still counts, even in a job dir as --out
    (tmp_path / "b" / "1" / "result.tmp").write_text("{")
    (tmp_path / "a" / "0" / ".result.json.x1.tmp").write_text("{")
    assert collect_runs([tmp_path], out_dirs=[out_dir, out_dir / "plots"]).n_temp == 2


def test_record_error_reason_is_value_free_and_message_names_the_value(tmp_path):
    rec = make_record()
    rec["params"]["total"] = 10**400
    path = write_record(tmp_path / "0", json.dumps(rec))
    with pytest.raises(RecordError) as err:
        load_record(path)
    assert err.value.reason == "params.total is not a count"
    assert str(err.value) == "params.total is not a count (an integer of 401 digits)"
    rec["params"]["total"] = "12"
    write_record(tmp_path / "0", json.dumps(rec))
    with pytest.raises(RecordError, match=r"^params.total is not a count \('12'\)$"):
        load_record(path)


def test_epochs_and_steps_trained_are_outcomes_not_configuration_axes(tmp_path):
    from paramcorr.analysis.configurations import configuration_means

    # Three seeds of one configuration; the diverged one stopped after 3 of 10 epochs.
    def record(seed: int, status: str, epochs: int, steps: int, acc: float) -> dict:
        return make_record("resnet50", seed=seed, status=status, epochs=epochs, steps=steps,
                           epochs_configured=10, metrics={"test_acc": acc})

    write_sweep(tmp_path, [record(0, "completed", 10, 200, 0.9),
                           record(1, "completed", 10, 200, 0.8),
                           record(2, "diverged", 3, 57, 0.1)])

    col = collect_runs([tmp_path])

    assert "epochs" not in col.run_axes and "steps" not in col.run_axes
    assert "epochs_configured" in col.run_axes
    assert sorted(col.runs["epochs"].tolist()) == [3, 10, 10]  # still in runs.csv
    configs = configuration_means(col.runs, ["test_acc"], col.run_axes)
    assert len(configs) == 1 and int(configs["n_runs"].iloc[0]) == 3
    assert configs["test_acc"].iloc[0] == pytest.approx((0.9 + 0.8 + 0.1) / 3)


# --- the record table (paramcorr.record.RUN_AXES / METRICS) ---------------------------------

@pytest.mark.parametrize(("key", "value", "reason"), [
    ("epochs_configured", 2.0, "run.epochs_configured is not an integer"),
    ("epochs_configured", True, "run.epochs_configured is not an integer"),
    ("epochs_configured", 10**400, "run.epochs_configured is not an integer"),
    ("steps", "57", "run.steps is not an integer"),
    ("steps", [57], "run.steps is not an integer"),
    ("steps", 57.5, "run.steps is not an integer"),
])
def test_epochs_configured_and_steps_must_be_integers(key, value, reason):
    rec = make_record()
    rec["run"][key] = value
    with pytest.raises(RecordError) as err:
        RunRecord.from_dict(rec)
    assert err.value.reason == reason


@pytest.mark.parametrize("steps", [None, 0, 57])
def test_epochs_configured_and_steps_may_be_integers_or_null(steps):
    rec = make_record(epochs_configured=None if steps is None else 10, steps=steps)
    record = RunRecord.from_dict(rec)
    assert record.run["steps"] == steps
    assert record.run["epochs_configured"] == (None if steps is None else 10)


def test_a_record_without_num_groups_still_reads():
    # num_groups is filled once the backbone is built: a record that failed before, or one
    # written before the axis existed, has none and is still a record.
    rec = make_record(status="failed", metrics={})
    del rec["run"]["num_groups"]
    assert "num_groups" not in RunRecord.from_dict(rec).run
    rec["run"]["num_groups"] = "six"
    with pytest.raises(RecordError, match="^run.num_groups is not a number"):
        RunRecord.from_dict(rec)


def test_the_table_s_strategy_axes_are_the_strategies_own():
    declared = {a.name: a.strategy for a in RUN_AXES}
    for terms in STRATEGY_TERMS:
        for axis, _ in terms.axes:
            # frozen_stages is in every record (null unless partial); the others only in
            # their strategy's records.
            assert declared[axis] == (None if axis == "frozen_stages" else terms.name), axis
    owned = {a.name for a in RUN_AXES if a.strategy is not None}
    assert owned == {axis for t in STRATEGY_TERMS for axis, _ in t.axes} - {"frozen_stages"}


def test_a_failed_record_has_every_core_metric_null_and_zero_timings():
    record = RunRecord.failed({"model": "m"}, "abc", "boom", extra={"inputs": None, "x": 1},
                              metrics={"gen_loss": 2.0, "test_acc": float("nan")},
                              timing={"total_s": 1.5})
    data = record.to_dict()
    assert data["status"] == Status.FAILED and data["error"] == "boom"
    assert list(data["metrics"]) == [*METRIC_KEYS, "gen_loss"]
    assert data["metrics"]["gen_loss"] == 2.0
    assert all(data["metrics"][k] is None for k in METRIC_KEYS)  # NaN as the file holds it
    assert data["timing"] == {**dict.fromkeys(TIMING_KEYS, 0.0), "total_s": 1.5}
    assert list(data["timing"]) == [*TIMING_KEYS, "total_s"]
    assert data["x"] == 1 and "inputs" not in data and data["params"] is None
    assert RunRecord.from_dict(json.loads(json.dumps(data))) == record
