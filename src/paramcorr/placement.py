"""Several jobs at once on one machine: each on its own GPU, CPU threads divided among them.

Used by ``hydra/launcher=local_gpus`` (joblib workers). A worker process claims a *slot*
(0..n-1, n = jobs at once) the first time it runs a job, by locking a file under the sweep
dir, and keeps it for its lifetime: slot ``s`` sees only GPU ``s % G`` (``CUDA_VISIBLE_DEVICES``
set before anything in the process touches CUDA) and ``cores // n`` cores: its CPU affinity
is narrowed to its own ``cores // n`` cores (data-loader workers inherit it) and torch uses as
many threads.

Why slots and not the job number: joblib hands jobs to whichever worker is free, so job ``k``
and job ``k + G`` can run at the same time; a lock held by the live worker process is the only
assignment that never puts two running jobs on one GPU. Locks die with their process, so a
crashed worker frees its slot for its replacement. Why per process and not per job: CUDA reads
``CUDA_VISIBLE_DEVICES`` once per process, so a reused worker could not move to another GPU.

Nothing here initialises CUDA: GPUs are discovered with ``nvidia-smi`` or, failing that, with
torch in a subprocess, so the launching process and the workers stay free to be pinned. If
discovery fails while the trainer wants a GPU the sweep is refused rather than run with every
job on GPU 0; on CPU sweeps the workers see no GPU at all.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from paramcorr.cpus import available_cpus
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


class DiscoveryError(UserError):
    """The GPUs could not be counted (a tool failed), as opposed to: there are none."""


def discover_gpus(timeout_s: float = 30.0) -> list[str]:
    """The GPUs this process may use, found without initializing CUDA here.

    ``CUDA_VISIBLE_DEVICES`` if set (a scheduler's allocation wins); else the NVIDIA driver's
    list via ``nvidia-smi -L``; if that is missing or fails, ``torch.cuda.device_count()``
    in a subprocess. Both run in subprocesses, so this process's CUDA stays uninitialized and
    can still be pinned. Raises :class:`DiscoveryError` if neither could answer.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    failures = []
    smi = shutil.which("nvidia-smi")
    if smi is not None:
        try:
            done = subprocess.run([smi, "-L"], capture_output=True, text=True,
                                  timeout=timeout_s, check=True)
            return [str(i) for i, line in enumerate(done.stdout.splitlines())
                    if line.startswith("GPU ")]
        except (OSError, subprocess.SubprocessError) as err:
            failures.append(f"nvidia-smi: {type(err).__name__}")
    count = _torch_device_count(timeout_s)
    if count is None:
        failures.append("torch.cuda.device_count in a subprocess failed")
        raise DiscoveryError(
            f"could not count the GPUs ({'; '.join(failures)}); set "
            "hydra.callbacks.gpu_placement.gpus=\"0,1,...\" (or CUDA_VISIBLE_DEVICES)")
    return [str(i) for i in range(count)]


def _torch_device_count(timeout_s: float) -> int | None:
    """``torch.cuda.device_count()`` asked of a fresh interpreter (CUDA untouched here)."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
            capture_output=True, text=True, timeout=timeout_s, check=True)
        return int(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def gpu_trainer(config: DictConfig) -> bool:
    """Whether the jobs' trainer asks for a GPU by name (``auto`` takes one if it sees one)."""
    accelerator = OmegaConf.select(config, "trainer.accelerator", default=None)
    return str(accelerator).lower() in ("gpu", "cuda")


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


def core_share(placement: Placement, cores: Sequence[int]) -> list[int]:
    """The slot's own cores: ``threads`` consecutive ones of ``cores`` (all when one slot)."""
    cores = sorted(cores)
    if placement.slots == 1 or len(cores) < placement.slots:
        return cores
    start = placement.slot * placement.threads
    return cores[start:start + placement.threads]


def apply(placement: Placement) -> None:
    """Pin this process: its GPU (before CUDA starts) and its share of the cores."""
    import torch

    if torch.cuda.is_initialized():
        # Too late to pin by environment; say so rather than silently sharing a GPU.
        log.warning("CUDA already initialized in this process; cannot pin it to GPU %s",
                    placement.gpu)
    else:
        # No GPU for this slot: hide them all, so `accelerator: auto` cannot land every job
        # on a GPU that discovery did not hand out.
        os.environ["CUDA_VISIBLE_DEVICES"] = placement.gpu if placement.gpu is not None else ""
    if hasattr(os, "sched_setaffinity"):
        # Data-loader workers inherit the affinity, and size themselves from it.
        os.sched_setaffinity(0, core_share(placement, os.sched_getaffinity(0)))
    torch.set_num_threads(placement.threads)
    # Libraries started later in this process (and its children) read these.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(placement.threads)


@contextmanager
def refusing() -> Iterator[None]:
    """Turn a :class:`UserError` in a launching-process callback into one line and exit 1.

    Hydra turns an exception in a callback into a warning and goes on, so a refusal raised
    there would not stop the sweep; ``SystemExit`` is not caught.
    """
    try:
        yield
    except UserError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(1) from err


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
        # Found once by the launching process; the workers get this object pickled.
        self._discovered: list[str] | None = None

    def _slots(self, config: DictConfig) -> int:
        n_jobs = OmegaConf.select(config, "hydra.launcher.n_jobs", default=None)
        jobs = effective_jobs(int(n_jobs)) if n_jobs is not None else 1
        if self.slots is None:
            return jobs
        if int(self.slots) < jobs:
            # Workers beyond the slots would wait for a slot forever.
            raise UserError(f"hydra.callbacks.gpu_placement.slots={self.slots} is fewer than "
                            f"hydra.launcher.n_jobs={n_jobs}; set slots=null (or >= n_jobs)")
        return int(self.slots)

    def _gpus(self) -> list[str]:
        given = parse_gpus(self.gpus)
        if given is not None:
            return given
        if self._discovered is None:
            self._discovered = discover_gpus()
        return self._discovered

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        with refusing():
            self.check(config)

    def check(self, config: DictConfig) -> None:
        """Fail in the launching process, before any job starts, if the GPUs cannot take it."""
        slots = self._slots(config)
        try:
            gpus = self._gpus()
        except DiscoveryError:
            if gpu_trainer(config):
                raise
            gpus = self._discovered = []  # a CPU sweep: workers are hidden from any GPU
        if not gpus and gpu_trainer(config):
            raise UserError(
                f"trainer.accelerator={config.trainer.accelerator} but no GPU found for "
                "hydra/launcher=local_gpus; set hydra.callbacks.gpu_placement.gpus=\"0,1\" "
                "or use trainer=cpu")
        check_capacity(slots, gpus, self.jobs_per_gpu)
        if gpus:
            used = min(len(gpus), slots)
            log.info("%d jobs at once on %d of %d GPU(s) (%s)", slots, used, len(gpus),
                     ",".join(gpus[:used]))
        else:
            log.info("%d jobs at once on CPU, %d torch threads each", slots,
                     max(1, available_cpus() // slots))

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _process_placement
        if _process_placement is None:
            slots = self._slots(config)
            slot = claim_slot(Path(config.hydra.sweep.dir) / SLOT_DIR, slots)
            _process_placement = plan(slot, slots, self._gpus(), available_cpus(),
                                      self.jobs_per_gpu)
            apply(_process_placement)
        log.info("placement: %s", _process_placement.describe())


class LaunchGuard(Callback):
    """Refuses, in the launching process, sweeps whose launcher cannot place their jobs.

    ``submitit_local`` hides every GPU from its jobs unless ``gpus_per_node`` is set, and
    with it starts every job at once on the same GPU(s): it cannot honour one job per GPU.
    A multi-device trainer is refused here too, before any job is started.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        with refusing():
            self.check(config)

    def check(self, config: DictConfig) -> None:
        from paramcorr.device import check_single_device

        if "trainer" in config:
            check_single_device(config.trainer)
        target = str(OmegaConf.select(config, "hydra.launcher._target_", default="") or "")
        if target.endswith("submitit_launcher.LocalLauncher") and gpu_trainer(config):
            raise UserError(
                "hydra/launcher=submitit_local cannot place GPU jobs (without "
                "hydra.launcher.gpus_per_node they see no GPU; with it every job starts at once "
                "on the same GPU); use hydra/launcher=local_gpus, or trainer=cpu")
