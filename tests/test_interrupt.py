"""Ctrl-C or SIGTERM (Slurm's time limit, scancel) on a sweep: one line with how far it got
and how to resume; a resumed job keeps the interrupted attempt's logs."""

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


@pytest.mark.parametrize(("signum", "word"), [(signal.SIGINT, "interrupted"),
                                             (signal.SIGTERM, "terminated")])
def test_a_signal_before_any_job_is_one_line_and_the_shells_exit_status(signum, word):
    """Outside a sweep (or before its first job) nothing was recorded: the line says so. The
    status is 128 + the signal's number, as a shell reports a process the signal ended."""
    code = ("import os, time\n"
            "from paramcorr.entry import run_cli\n"
            "def main():\n"
            f"    os.kill(os.getpid(), {int(signum)})\n"
            "    time.sleep(30)\n"
            "run_cli(main)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 128 + signum, done.stderr
    assert done.stderr.splitlines() == [f"{word}: the run did not finish and wrote no record; "
                                        "run the same command again to start it over"]


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "word"), [(signal.SIGINT, "interrupted"),
                                             (signal.SIGTERM, "terminated")])
def test_a_stopped_sweep_says_how_many_jobs_finished_and_the_same_command_resumes(
        tmp_path, signum, word):
    """Ctrl-C, or the SIGTERM of Slurm's time limit, during a job's training."""
    args = [sys.executable, str(ROOT / "scripts" / "train.py"), "-m", *TINY, "name=stopped",
            "seed=0,1,2,3,4,5", "trainer.max_epochs=3",
            # one configuration of the smoke grid, six seeds: six jobs
            "hydra.sweeper.params.model=test_resnet", "hydra.sweeper.params.freeze=none",
            "hydra.sweeper.params.optimizer=adam", f"paths.output_root={tmp_path}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    sweep = tmp_path / "multirun" / "stopped"
    deadline = time.monotonic() + 300
    while not list(sweep.rglob("result.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # into the next job's training
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err[-2000:]
    done = len(list(sweep.rglob("result.json")))
    assert 1 <= done < 6
    # (a native library may add its own notes at interpreter exit, after ours)
    lines = [line for line in err.splitlines() if line.startswith(word)]
    assert lines == [(f"{word}: {done} of 6 jobs finished (records under {sweep}); re-run "
                    "the same command to resume: finished jobs are skipped")]
    assert "Traceback" not in err
    again = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(list(sweep.rglob("result.json"))) == 6
    assert "will be deleted" not in again.stderr + again.stdout
