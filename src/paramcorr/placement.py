"""Several jobs at once on one machine: each on its own GPU, CPU threads divided among them.

Used by ``hydra/launcher=local_gpus`` (joblib workers). A worker process claims a *slot*
(0..n-1, n = jobs at once) the first time it runs a job, by locking a file under the sweep
dir, and keeps it for its lifetime: slot ``s`` sees only GPU ``s % G`` (``CUDA_VISIBLE_DEVICES``
set before anything in the process touches CUDA) and ``cores // n`` torch threads.

Why slots and not the job number: joblib hands jobs to whichever worker is free, so job ``k``
and job ``k + G`` can run at the same time; a lock held by the live worker process is the only
assignment that never puts two running jobs on one GPU. Locks die with their process, so a
crashed worker frees its slot for its replacement. Why per process and not per job: CUDA reads
``CUDA_VISIBLE_DEVICES`` once per process, so a reused worker could not move to another GPU.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from paramcorr.errors import UserError

log = logging.getLogger("paramcorr")
SLOT_DIR = ".slots"


@dataclass(frozen=True)
class Placement:
    """Where one concurrent job runs: its slot, the GPU it sees (None: CPU) and its threads."""

    slot: int
    slots: int
    gpu: str | None
    threads: int

    def describe(self) -> str:
        where = f"GPU {self.gpu}" if self.gpu is not None else "CPU"
        return f"slot {self.slot + 1}/{self.slots}: {where}, {self.threads} torch threads"


def check_capacity(slots: int, gpus: Sequence[str], jobs_per_gpu: int = 1) -> None:
    """Refuse more jobs at once than GPUs x ``jobs_per_gpu`` (two jobs on one GPU only if asked)."""
    if slots < 1:
        raise UserError(f"jobs at once must be >= 1, got {slots}")
    if jobs_per_gpu < 1:
        raise UserError(f"hydra.callbacks.gpu_placement.jobs_per_gpu={jobs_per_gpu} must be >= 1")
    capacity = len(gpus) * jobs_per_gpu
    if gpus and slots > capacity:
        raise UserError(
            f"{slots} jobs at once but {len(gpus)} GPU(s) x jobs_per_gpu={jobs_per_gpu}; set "
            f"hydra.launcher.n_jobs={capacity} (or share GPUs: "
            f"hydra.callbacks.gpu_placement.jobs_per_gpu={-(-slots // len(gpus))})")


def plan(slot: int, slots: int, gpus: Sequence[str], cores: int,
         jobs_per_gpu: int = 1) -> Placement:
    """Slot ``slot`` of ``slots`` on ``gpus`` and ``cores``: the pure rule, tested on its own.

    Slots ``0..G-1`` get distinct GPUs, slot ``G`` shares GPU 0 (only with ``jobs_per_gpu``
    > 1), and so on round-robin, so shared GPUs are shared evenly. Threads: the cores split
    evenly, at least one each.
    """
    check_capacity(slots, gpus, jobs_per_gpu)
    if not 0 <= slot < slots:
        raise ValueError(f"slot {slot} outside 0..{slots - 1}")
    gpu = gpus[slot % len(gpus)] if gpus else None
    return Placement(slot=slot, slots=slots, gpu=gpu, threads=max(1, cores // slots))


def parse_gpus(value: Any) -> list[str] | None:
    """``gpus`` as given in config: null (discover), a list, or a comma-separated string."""
    if value is None:
        return None
    if isinstance(value, str):
        return [g.strip() for g in value.split(",") if g.strip()]
    if isinstance(value, int):
        return [str(value)]
    return [str(g) for g in value]


def discover_gpus() -> list[str]:
    """The GPUs this process may use, found without initializing CUDA here.

    ``CUDA_VISIBLE_DEVICES`` if set (a scheduler's allocation wins); else the NVIDIA driver's
    list via ``nvidia-smi -L`` (a subprocess, so this process's CUDA stays uninitialized and
    can still be pinned); else none.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def available_cores() -> int:
    """Cores this process may run on (respects taskset / cgroup affinity, unlike cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def effective_jobs(n_jobs: int) -> int:
    """joblib's reading of ``n_jobs`` (-1: one per CPU, -2: all but one, ...)."""
    import joblib

    return int(joblib.effective_n_jobs(n_jobs))


# The slot this process holds: (slot, open lock file). A process claims once and keeps it.
_claimed: tuple[int, TextIO] | None = None
# Set by the first job a process runs and kept: callbacks are unpickled afresh for every job,
# and a reused worker cannot change GPU once CUDA has started.
_process_placement: Placement | None = None


def claim_slot(lock_dir: Path, slots: int, poll_s: float = 0.5,
               warn_after_s: float = 30.0) -> int:
    """Lock the first free slot file ``lock_dir/slot-<i>.lock`` and hold it for this process.

    Waits if every slot is held (more live workers than slots, e.g. an old worker still
    exiting); the lock is released by the OS when the process ends.
    """
    global _claimed
    if _claimed is not None:
        return _claimed[0]
    lock_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    warned = False
    while True:
        for slot in range(slots):
            handle = open(lock_dir / f"slot-{slot}.lock", "a+")  # noqa: SIM115 - held for life
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            _claimed = (slot, handle)
            return slot
        if not warned and time.monotonic() - started > warn_after_s:
            log.warning("all %d slots in %s are held; waiting for one to free", slots, lock_dir)
            warned = True
        time.sleep(poll_s)


def apply(placement: Placement) -> None:
    """Pin this process: its GPU (before CUDA starts) and its share of the cores."""
    import torch

    if placement.gpu is not None:
        if torch.cuda.is_initialized():
            # Too late to pin by environment; say so rather than silently sharing a GPU.
            log.warning("CUDA already initialized in this process; cannot pin it to GPU %s",
                        placement.gpu)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = placement.gpu
    torch.set_num_threads(placement.threads)
    # Libraries started later in this process (and its children) read these.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(placement.threads)


class GpuPlacement(Callback):
    """Hydra callback: pin each job of a local parallel sweep to a slot (see module doc).

    ``slots``: jobs at once; null reads the joblib launcher's ``n_jobs``. ``gpus``: null
    discovers them, or a list / "0,2" string. ``jobs_per_gpu``: > 1 allows sharing a GPU.
    """

    def __init__(self, slots: int | None = None, gpus: Any = None,
                 jobs_per_gpu: int = 1) -> None:
        self.slots = slots
        self.gpus = gpus
        self.jobs_per_gpu = jobs_per_gpu

    def _slots(self, config: DictConfig) -> int:
        if self.slots is not None:
            return int(self.slots)
        n_jobs = OmegaConf.select(config, "hydra.launcher.n_jobs", default=None)
        return effective_jobs(int(n_jobs)) if n_jobs is not None else 1

    def _gpus(self) -> list[str]:
        given = parse_gpus(self.gpus)
        return given if given is not None else discover_gpus()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Fail in the launching process, before any job starts, if the GPUs cannot take it.
        slots, gpus = self._slots(config), self._gpus()
        check_capacity(slots, gpus, self.jobs_per_gpu)
        if gpus:
            used = min(len(gpus), slots)
            log.info("%d jobs at once on %d of %d GPU(s) (%s)", slots, used, len(gpus),
                     ",".join(gpus[:used]))
        else:
            log.info("%d jobs at once on CPU, %d torch threads each", slots,
                     max(1, available_cores() // slots))

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _process_placement
        if _process_placement is None:
            slots = self._slots(config)
            slot = claim_slot(Path(config.hydra.sweep.dir) / SLOT_DIR, slots)
            _process_placement = plan(slot, slots, self._gpus(), available_cores(),
                                      self.jobs_per_gpu)
            apply(_process_placement)
        log.info("placement: %s", _process_placement.describe())
