"""The CPUs this process may use: one count for loader workers (paramcorr.data) and for the
torch threads of a sweep's parallel jobs (paramcorr.placement)."""

from __future__ import annotations

import os


def available_cpus() -> int:
    """CPUs this process may use: its affinity (taskset, cgroups, and the share a local_gpus
    slot narrows it to), capped by a Slurm allocation (``SLURM_CPUS_PER_TASK``)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        cpus = min(cpus, int(slurm))
    return max(1, cpus)
