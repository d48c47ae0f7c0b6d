"""experiment=depth: partial freezing at every stage of each backbone, no fake runs."""

from __future__ import annotations

import json

import pytest
import timm
import yaml

from helpers import CONF, assert_schema_valid, run_script
from paramcorr.depth import number_of_groups
from paramcorr.freezing import number_of_groups as groups_of_model
from paramcorr.job import run_job
from paramcorr.record import NOT_APPLICABLE_NAME, RECORD_NAME, NotRun


def _sweep_params(preset: str) -> dict:
    return yaml.safe_load((CONF / "experiment" / f"{preset}.yaml").read_text())["hydra"][
        "sweeper"]["params"]


def test_depth_sweeps_the_demo_backbones_up_to_their_deepest_stage():
    depth, demo = _sweep_params("depth"), _sweep_params("demo")
    assert depth["model"] == demo["model"]  # same backbones as the demo
    start, stop = (int(x) for x in depth["freeze.stages"].strip("range()").split(","))
    deepest = max(number_of_groups(m) for m in depth["model"].split(","))
    # The ceiling covers every backbone's last stage (groups - 1), with no empty stage beyond.
    assert start == 0 and stop == deepest


def test_group_count_needs_no_weights_and_matches_the_real_model():
    assert number_of_groups("test_resnet") == 6
    assert number_of_groups("mobilenetv2_050") == groups_of_model(
        timm.create_model("mobilenetv2_050", num_classes=5))


def test_out_of_range_stage_is_not_applicable_only_when_asked(train_config, tmp_path):
    skip = train_config("freeze=partial", "freeze.stages=6", "freeze.out_of_range=skip")
    out = tmp_path / "skip"
    result = run_job(skip, out)
    assert isinstance(result, NotRun) and result.kind == "not_applicable"
    assert result.record is None and "valid: 0..5" in result.reason
    assert not (out / RECORD_NAME).exists()
    marker = json.loads((out / NOT_APPLICABLE_NAME).read_text())
    assert marker["num_groups"] == 6 and marker["frozen_stages"] == 6
    assert "valid: 0..5" in marker["reason"]

    # The default stays an error: a single run with a wrong stage count is the user's mistake.
    error = train_config("freeze=partial", "freeze.stages=6")
    failed = run_job(error, tmp_path / "error")
    assert failed["status"] == "failed" and "freeze.stages must be in 0..5" in failed["error"]


@pytest.mark.slow
def test_depth_sweep_runs_every_valid_stage_once(tmp_path):
    done = run_script("train.py", "-m", "experiment=depth", "model=test_resnet",
                      "model.weights=random", "trainer=cpu", "trainer.max_epochs=1",
                      "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
                      cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    output = done.stdout + done.stderr
    sweep = tmp_path / "outputs" / "multirun" / "depth"
    records = [json.loads(p.read_text()) for p in sweep.rglob(RECORD_NAME)]
    stages = sorted(r["run"]["frozen_stages"] for r in records)
    assert stages == [0, 1, 2, 3, 4, 5]  # test_resnet's 6 coarse groups
    for record in records:
        assert_schema_valid(record)
        assert record["status"] == "completed" and record["run"]["num_groups"] == 6
    by_stage = sorted(records, key=lambda r: r["run"]["frozen_stages"])
    trainable = [r["params"]["trainable"] for r in by_stage]
    assert all(a > b for a, b in zip(trainable, trainable[1:], strict=False)), trainable
    assert len(list(sweep.rglob(NOT_APPLICABLE_NAME))) == 3  # stages 6, 7, 8 of range(0,9)
    assert "[9/9]" in output
    # The analysis (run at the sweep's end) saw the six runs and nothing else.
    runs_csv = (sweep / "analysis" / "runs.csv").read_text().splitlines()
    assert len(runs_csv) == 1 + 6
    assert "failed" not in "".join(runs_csv[1:])
