"""Ctrl-C on a sweep: one line with how far it got and how to resume; a resumed job keeps
the interrupted attempt's logs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from helpers import ROOT, TINY
from paramcorr.loggers import csv_logger


def test_an_interrupted_attempts_csv_log_is_kept(tmp_path):
    old = tmp_path / "csv"
    old.mkdir()
    (old / "metrics.csv").write_text("epoch,val_acc\n0,0.5\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # pyproject's filter would hide Lightning's warning
        logger = csv_logger(str(tmp_path), "csv", "")
        logger.log_metrics({"val_acc": 0.75}, step=0)
        logger.save()
    assert not [w for w in caught if "will be deleted" in str(w.message)]
    assert (tmp_path / "csv.attempt-1" / "metrics.csv").read_text() == "epoch,val_acc\n0,0.5\n"
    assert Path(logger.log_dir) == old
    assert "0.75" in (old / "metrics.csv").read_text()  # the new attempt's own log
    csv_logger(str(tmp_path), "csv", "")
    assert (tmp_path / "csv.attempt-2" / "metrics.csv").read_text() == (
        old.with_name("csv.attempt-2") / "metrics.csv").read_text()
    assert "0.75" in (tmp_path / "csv.attempt-2" / "metrics.csv").read_text()  # kept too
    assert (tmp_path / "csv.attempt-1" / "metrics.csv").read_text() == "epoch,val_acc\n0,0.5\n"


@pytest.mark.slow
def test_ctrl_c_says_how_many_jobs_finished_and_the_same_command_resumes(tmp_path):
    args = [sys.executable, str(ROOT / "scripts" / "train.py"), "-m", *TINY, "name=ctrlc",
            "seed=0,1,2,3,4,5", "trainer.max_epochs=3",
            # one configuration of the smoke grid, six seeds: six jobs
            "hydra.sweeper.params.model=test_resnet", "hydra.sweeper.params.freeze=none",
            "hydra.sweeper.params.optimizer=adam", f"paths.output_root={tmp_path}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    sweep = tmp_path / "multirun" / "ctrlc"
    deadline = time.monotonic() + 300
    while not list(sweep.rglob("result.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # into the next job's training
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    done = len(list(sweep.rglob("result.json")))
    # (a native library may add its own notes at interpreter exit, after ours)
    lines = [line for line in err.splitlines() if line.startswith("interrupted")]
    assert lines == [(f"interrupted: {done} of 6 jobs finished (records under {sweep}); re-run "
                    "the same command to resume: finished jobs are skipped")]
    assert "Traceback" not in err
    again = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(list(sweep.rglob("result.json"))) == 6
    assert "will be deleted" not in again.stderr + again.stdout
