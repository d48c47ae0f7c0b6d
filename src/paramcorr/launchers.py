"""Hydra launchers: local parallel jobs that outlive a dead worker; Slurm with srun CPU binding.

``hydra/launcher=local_gpus`` uses :class:`LocalGpusLauncher`, ``hydra/launcher=slurm`` uses
:class:`SlurmLauncher`; both take the keys of the Hydra plugins they extend.
"""

from __future__ import annotations

import copy
import logging
import multiprocessing
import os
import re
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra_plugins.hydra_joblib_launcher._core import execute_job
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from joblib.externals.loky import ProcessPoolExecutor
from joblib.externals.loky.process_executor import BrokenProcessPool
from omegaconf import DictConfig, open_dict, read_write

from paramcorr.atomic import JobBusy, job_lock
from paramcorr.errors import UserError
from paramcorr.inputs import input_identity
from paramcorr.placement import effective_jobs
from paramcorr.record import (
    RECORD_NAME,
    RunRecord,
    config_hash,
    find_record,
    is_finished,
    set_aside,
    write_record,
)

log = logging.getLogger("paramcorr")


def platform_start_method() -> None:
    """In a loky worker, make this platform's start method the default for new processes.

    A loky worker starts with loky's own start method as the process-wide default (its
    ``Process._bootstrap`` forces it). A plain ``multiprocessing.Process`` started there, as
    torch's DataLoader starts its workers, is then launched by loky's Popen, which needs
    attributes only loky's processes have: ``'Process' object has no attribute 'env'``. Reset
    to the platform's default, a job's loader workers start as they do in a job run by any
    other launcher.
    """
    multiprocessing.set_start_method(None, force=True)


def new_worker() -> ProcessPoolExecutor:
    """One ``local_gpus`` worker: a loky pool of one process (see :class:`LocalGpusLauncher`)."""
    return ProcessPoolExecutor(max_workers=1, initializer=platform_start_method)


class LocalGpusLauncher(JoblibLauncher):
    """``n_jobs`` worker processes on this machine, each running one job at a time.

    Hydra's joblib launcher sends every job through one loky pool; when a worker dies (the
    host's OOM killer, a driver segfault) loky breaks the whole pool, the other running jobs
    are killed and the sweep ends. Here each worker is its own one-process loky executor, so
    a death is pinned on exactly the job it was running: that job gets a ``failed`` record, a
    fresh worker takes the freed slot (see :mod:`paramcorr.placement`), the others go on.
    Workers are reused from job to job, like joblib's, and start fresh (loky's spawn-like
    start), so no CUDA state is inherited.
    """

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        workers = max(1, min(effective_jobs(int(self.joblib.get("n_jobs") or -1)),
                             len(job_overrides)))
        log.info("launching %d jobs, %d at once", len(job_overrides), workers)
        for idx, overrides in enumerate(job_overrides):
            log.info("\t#%d : %s", initial_job_idx + idx, " ".join(filter_overrides(overrides)))
        singleton_state = Singleton.get_state()
        pending = deque(enumerate(job_overrides))
        executors: list[Any] = [None] * workers
        running: dict[Future, tuple[int, int, Sequence[str]]] = {}
        results: dict[int, JobReturn] = {}

        def submit(slot: int) -> None:
            if executors[slot] is None:
                executors[slot] = new_worker()
            idx, overrides = pending.popleft()
            future = executors[slot].submit(
                execute_job, initial_job_idx + idx, overrides, self.hydra_context, self.config,
                self.task_function, singleton_state)
            running[future] = (slot, idx, overrides)

        try:
            for slot in range(workers):
                if pending:
                    submit(slot)
            while running:
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in done:
                    slot, idx, overrides = running.pop(future)
                    try:
                        results[idx] = future.result()
                    except BrokenProcessPool as err:
                        results[idx] = self._dead_worker(initial_job_idx + idx, overrides, err)
                        executors[slot].shutdown(wait=False, kill_workers=True)
                        executors[slot] = None
                    if pending:
                        submit(slot)
        except BaseException:
            for executor in executors:
                if executor is not None:
                    executor.shutdown(wait=False, kill_workers=True)
            raise
        for executor in executors:
            if executor is not None:
                executor.shutdown(wait=True)
        return [results[i] for i in range(len(job_overrides))]

    def _dead_worker(self, idx: int, overrides: Sequence[str], err: BaseException) -> JobReturn:
        """The ``failed`` record of a job whose worker process died, written from here."""
        assert self.config is not None and self.hydra_context is not None
        sweep_config = self.hydra_context.config_loader.load_sweep_config(
            self.config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
            sweep_config.hydra.job.num = idx
        HydraConfig.instance().set_config(sweep_config)
        output_dir = Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)
        with read_write(sweep_config.hydra.runtime), open_dict(sweep_config.hydra.runtime):
            sweep_config.hydra.runtime.output_dir = str(output_dir.absolute())
        HydraConfig.instance().set_config(sweep_config)
        task_cfg = copy.deepcopy(sweep_config)
        with read_write(task_cfg), open_dict(task_cfg):
            del task_cfg["hydra"]
        codes = re.search(r"exit codes of the workers are (\{.*?\})", str(err))
        error = (f"worker process died while running this job (exit "
                 f"{codes.group(1) if codes else 'unknown'}; e.g. the host's OOM killer or a "
                 "crash in native code); re-run the sweep to retry it")
        if record_dead_worker(task_cfg, output_dir, error):
            log.error("%s | failed: %s", " ".join(filter_overrides(overrides)), error)
        HydraConfig.instance().set_config(self.config)
        # Completed, like any job that wrote a failed record: the sweep goes on.
        return JobReturn(overrides=list(overrides), cfg=task_cfg, hydra_cfg=sweep_config,
                         working_dir=os.getcwd(), task_name=sweep_config.hydra.job.name,
                         status=JobStatus.COMPLETED, _return_value=None)


def record_dead_worker(task_cfg: DictConfig, output_dir: Path, error: str,
                       lock_wait_s: float = 15.0) -> bool:
    """Write the ``failed`` record of a job whose worker died; False if none was written.

    None is written when the job finished before its worker died (its record stands) or
    another process is running the job now (it holds the job lock). An earlier record of
    another config, or a failed or unreadable one, is set aside first exactly as the job
    itself would have done, so a completed record is never overwritten.
    """
    # Lazily: the job module loads torch, which the launching process otherwise never needs.
    from paramcorr.job import run_axes

    try:
        inputs = input_identity(task_cfg)
    except (OSError, UserError):  # the inputs are gone: the job would have failed on them
        inputs = None
    chash = config_hash(task_cfg, inputs)
    path = output_dir / RECORD_NAME
    output_dir.mkdir(parents=True, exist_ok=True)
    # The dead worker's forked loader workers hold its job lock until they notice their
    # parent is gone (seconds); a lock held longer is another launch running this job.
    deadline = time.monotonic() + lock_wait_s
    while True:
        try:
            with job_lock(output_dir):
                existing = find_record(path)
                if is_finished(existing, chash):  # it may have finished, then died
                    return False
                if existing is not None or os.path.lexists(path):
                    moved = set_aside(path, existing)
                    log.info("earlier record kept as %s", moved.name)
                record = RunRecord.failed(run_axes(task_cfg), chash, error,
                                          extra={"inputs": inputs})
                write_record(path, record)
                return True
        except JobBusy as busy:
            if time.monotonic() >= deadline:  # it will write its own record
                log.info("skip (running in another process): %s", busy)
                return False
            time.sleep(0.5)


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    """submitit's Slurm launcher whose ``srun`` gets ``--cpus-per-task``.

    From Slurm 22.05 srun no longer inherits sbatch's ``--cpus-per-task``; without it the
    task may be bound to a single core with all data-loader workers on it.
    """

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        cpus = self.params.get("cpus_per_task")
        if cpus:
            self.params["srun_args"] = [f"--cpus-per-task={cpus}"]
