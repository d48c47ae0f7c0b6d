"""Process-wide settings of the entry points (paramcorr.entry)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import TINY, run_script


def test_objects_frozen_between_jobs_are_handed_back_at_exit():
    """gc.freeze() keeps objects out of the shutdown collection; extension modules that check
    for leaks at exit (triton's nanobind bindings, loaded by torch._dynamo) then print ~30 lines
    after the user's one-line error. Whatever the torch build, nothing stays frozen at exit."""
    # atexit runs last-registered first: this reads the count after entry's own handler ran.
    code = ("import atexit, gc\n"
            "atexit.register(lambda: print('frozen at exit:', gc.get_freeze_count()))\n"
            "from paramcorr.long_lived import freeze_until_exit\n"
            "freeze_until_exit()\n"
            "print('frozen after a job:', gc.get_freeze_count())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    after_job, at_exit = (int(line.rsplit(":", 1)[1]) for line in done.stdout.splitlines())
    assert after_job > 1000  # the point of freezing: the long-lived objects left collections
    assert at_exit == 0


@pytest.mark.slow
def test_a_failing_job_of_a_sweep_leaves_stderr_free_of_exit_noise(tmp_path):
    """The sweep's process froze objects after its first job; its exit prints nothing extra
    (with torch 2.15 + triton 3.9 it printed nanobind's leak report)."""
    done = run_script("train.py", "-m", *TINY, "model.name=resnet5O,test_resnet",
                      f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "leaked" not in done.stderr and "nanobind" not in done.stderr, done.stderr[-3000:]
