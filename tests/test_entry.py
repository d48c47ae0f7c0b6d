"""Process-wide settings of the entry points (paramcorr.entry)."""

from __future__ import annotations

import pytest

from helpers import TINY, run_script


@pytest.mark.slow
def test_a_failing_job_of_a_sweep_leaves_stderr_free_of_exit_noise(tmp_path):
    """The sweep's process froze objects after its first job; its exit prints nothing extra
    (with torch 2.15 + triton 3.9 it printed nanobind's leak report)."""
    done = run_script("train.py", "-m", *TINY, "model.name=resnet5O,test_resnet",
                      f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "leaked" not in done.stderr and "nanobind" not in done.stderr, done.stderr[-3000:]
