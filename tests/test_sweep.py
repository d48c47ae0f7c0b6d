"""Multiruns as a user runs them: one record per job, resume by skipping, failures contained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import assert_schema_valid, run_script
from paramcorr.sweep import sweep_size

pytestmark = pytest.mark.slow


def records(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.rglob("result.json")}


def test_smoke_multirun_writes_one_record_per_job_and_resumes(tmp_path):
    done = run_script("train.py", "-m", "experiment=smoke", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    sweep = tmp_path / "outputs" / "multirun" / "smoke"
    first = records(sweep)
    assert len(first) == 8
    for record in first.values():
        assert_schema_valid(record)
        assert record["status"] == "completed"
    assert "[8/8]" in done.stdout + done.stderr

    again = run_script("train.py", "-m", "experiment=smoke", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (again.stdout + again.stderr).count("skip (already completed)") == 8
    assert records(sweep) == first


def test_a_failing_job_leaves_a_failed_record_and_the_sweep_goes_on(tmp_path):
    done = run_script("train.py", "-m", "experiment=smoke", "name=mixed", "freeze=none",
                      "optimizer=adam", "model.name=test_resnet,resnet5O", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    found = records(tmp_path / "outputs" / "multirun" / "mixed")
    statuses = sorted(r["status"] for r in found.values())
    assert len(found) == 4 and statuses == ["completed"] * 2 + ["failed"] * 2
    failed = [r for r in found.values() if r["status"] == "failed"]
    assert all("unknown backbone 'resnet5O'" in r["error"] for r in failed)
    assert all("resnet50" in r["error"] for r in failed)  # closest timm names


def test_sweep_size_counts_the_basic_sweepers_jobs():
    assert sweep_size(["experiment=demo"], {"model": "a,b,c", "freeze": "base,none",
                                            "lr": "1e-2,1e-3,1e-4"}) == 18
    assert sweep_size(["lr=1e-2,1e-3", "seed=range(3)"], {"lr": "1,2,3,4"}) == 6
