"""scripts/gpu_check.sh --cpu: the GPU check's every step, tiny, on CPU (so CI runs it)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from helpers import ROOT


@pytest.mark.slow  # five steps, each a real run or sweep: minutes on a small CI machine
def test_gpu_check_dry_run_passes(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--cpu"], env=env,
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    table = done.stdout
    for step, records in (("smoke", "8/8"), ("freeze_none", "1/1"), ("freeze_base", "1/1"),
                          ("local_gpus", "8/8")):
        row = next(line for line in table.splitlines() if line.startswith(step))
        assert row.split()[1] == "0" and records in row.split(), row
    assert "cached_features=True" in next(
        line for line in table.splitlines() if line.startswith("freeze_base"))
    assert "FAILED" not in table
    assert "test_resnet      32-true" in table  # the bench row, through job.py
    # bench_gpu.py --inputs folder: decoding vs the input cache, both through job.py
    assert "decode/s  cached/s" in table
    row = next(line for line in table.splitlines() if line.startswith("bench_inputs"))
    assert row.split()[1] == "0", row
