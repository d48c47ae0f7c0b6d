"""The launch path's own faults (issue 16): loader workers inside local_gpus workers, a dead
worker's record, path-valued overrides, planted symlinks, file modes, progress of sweeps
given on the command line."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from paramcorr import launchers
from paramcorr.data import make_loader


def _batches_from_worker_processes() -> list[list[float]]:
    """What a job does with data.num_workers > 0: iterate a loader with worker processes."""
    loader = make_loader(TensorDataset(torch.arange(12.0)), batch_size=4, shuffle=False,
                         num_workers=2)
    return [batch[0].tolist() for batch in loader]


def test_loader_workers_start_inside_a_local_gpus_worker():
    # A local_gpus worker is a loky process; loader workers started there used to go through
    # loky's Popen and die with "'Process' object has no attribute 'env'".
    worker = launchers.new_worker()
    try:
        batches = worker.submit(_batches_from_worker_processes).result(timeout=120)
    finally:
        worker.shutdown(wait=True)
    assert batches == [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0], [8.0, 9.0, 10.0, 11.0]]
