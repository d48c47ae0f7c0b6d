"""What the Hydra entry points do with a composed config (the scripts only wire this up).

Process-wide settings live here, where a reader of the entry point sees them:
- the OmegaConf resolvers the config tree uses (registered on import, so that every process
  that resolves a sweep's paths has them: the launching one and each launcher worker, which
  imports this module to unpickle the task function);
- garbage-collector freezing after a sweep's first job (:mod:`paramcorr.long_lived`).

The job and pretraining modules are imported inside the tasks, deliberately: they load
torch, Lightning and timm (seconds), and the scripts import this module before Hydra
composes the config, so a typo on the command line is answered without loading them.
"""

from __future__ import annotations

import functools
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from paramcorr.atomic import OutputError
from paramcorr.config import refuse_unknown_appended_keys, register_schemas
from paramcorr.errors import UserError
from paramcorr.inputs import sweep_segment
from paramcorr.job_dirs import job_dirname, job_subdir
from paramcorr.long_lived import freeze_until_exit
from paramcorr.record import RESULT_NEUTRAL_KEYS, NotRun, Status

log = logging.getLogger(__name__)

# The config tree of a source checkout (the scripts point Hydra at the same folder).
CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"


def register_resolvers() -> None:
    """The resolvers conf/hydra/default.yaml uses (idempotent)."""
    resolvers = {
        # A sweep job's directory name (override_dirname with path values shortened).
        "paramcorr.job_dirname": job_dirname,
        # The one list of result-neutral keys (paramcorr.record), for the job dir name.
        "paramcorr.result_neutral_keys": lambda: list(RESULT_NEUTRAL_KEYS),
        # The sweep dir's data segment: sweeps on different data never share a directory.
        "paramcorr.data_segment": sweep_segment,
        # A job's dir below the sweep dir: path-valued overrides cannot climb out of it.
        "paramcorr.job_subdir": job_subdir,
    }
    for name, resolver in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


register_resolvers()


def compose_config(config_name: str, overrides: list[str], output_dir: Path,
                   config_dir: Path = CONFIG_DIR) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` as the Hydra app would, outside of it.

    For tests, benchmarks and notebooks: ``run_job(compose_config("train", [...], d), d)``.
    Outputs (and ``${hydra:runtime.output_dir}``) go to ``output_dir``.
    """
    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        cfg = compose(config_name=config_name, return_hydra_config=True,
                      overrides=[f"paths.output_root={output_dir}", *overrides])
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def quiet_log_files() -> None:
    """A log file that cannot be written (full disk, quota) drops the line, without the
    ``--- Logging error ---`` traceback per line: the job says its output trouble in one line.

    Hydra opens the job's ``.log`` file handlers before each job; other logging errors (a bad
    format) are still reported.
    """
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handleError = functools.partial(_drop_on_os_error, handler)


def _drop_on_os_error(handler: logging.Handler, record: logging.LogRecord) -> None:
    if not isinstance(sys.exc_info()[1], OSError):
        logging.Handler.handleError(handler, record)


def train_task(cfg: DictConfig) -> float | None:
    """One job: run it into the Hydra output dir. A failed single run exits non-zero.

    Returns the record's ``optimized_metric`` (default ``val_acc``, never a test metric by
    default) for Hydra sweepers that optimize; None when the job has no record.
    """
    from paramcorr.job import run_job  # lazy: see the module doc

    quiet_log_files()
    hydra_cfg = HydraConfig.get()
    single = hydra_cfg.mode != RunMode.MULTIRUN
    try:
        result = run_job(cfg, Path(hydra_cfg.runtime.output_dir))
    except OutputError as err:
        if cfg.get("strict", False):
            raise
        if single:
            _fail(str(err))
        log.error("error: %s", err)  # the sweep goes on with the next job
        return None
    finally:
        if not single:  # a single run has no later job to speed up
            freeze_until_exit()
    record = result.record if isinstance(result, NotRun) else result
    if record is None:
        return None
    if record.status == Status.FAILED and single:
        _fail(record.error)
    return record.metrics.get(cfg.optimized_metric)


def _fail(message: str | None) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def pretrain_task(cfg: DictConfig) -> None:
    from paramcorr.pretraining import pretrain_all  # lazy: see the module doc

    quiet_log_files()
    try:
        pretrain_all(cfg)
    except UserError as err:
        if cfg.get("strict", False):
            raise
        _fail(str(err))
    except OutputError as err:
        if cfg.get("strict", False):
            raise
        _fail(f"{err} (pretraining writes to out_dir={cfg.out_dir})")


def check_appended_keys(config: DictConfig) -> None:
    """Refuses ``+key=value`` for a key the schema does not have, before any job runs: one
    line, exit code 1. Called by :class:`paramcorr.sweep.OutputCheck`, the first callback
    (one more callback object makes a native library report leaks at interpreter exit)."""
    try:
        refuse_unknown_appended_keys(str(config.hydra.job.config_name),
                                     list(config.hydra.overrides.task), config,
                                     is_group=_is_config_group)
    except UserError as err:
        # SystemExit passes through Hydra's error handler: one line, exit code 1.
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None


def _is_config_group(name: str) -> bool:
    """Whether ``name`` is a config group of the composing Hydra app (``+experiment=x``)."""
    if GlobalHydra.instance().is_initialized():
        loader = GlobalHydra.instance().config_loader()
        return bool(loader.get_group_options(name))
    return (CONFIG_DIR / name).is_dir()


# The signals that stop a run early, each with the word its one line starts with: Ctrl-C,
# and the SIGTERM that Slurm (time limit, scancel, preemption), systemd and kill send. The
# exit status is the shell's for a process a signal ended, 128 + the signal's number.
STOP_SIGNALS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}


def run_cli(main: Callable[[], Any]) -> None:
    """Run a script's Hydra ``main``; Ctrl-C or SIGTERM ends it with one line and exit code
    128 + the signal's number (130, 143).

    Lightning answers an interrupt inside ``fit`` by exiting with status 1 and Hydra adds
    nothing, so the line is printed here: how many jobs of the sweep finished and that the
    same command resumes it. The handler only notes the signal and then does what Python
    does on Ctrl-C (raise KeyboardInterrupt), so Lightning's own shutdown still runs; during
    ``fit`` Lightning calls it after its own SIGTERM notifier. Without it SIGTERM would end
    the process at once between jobs, and inside ``fit`` without a word.
    """
    received: list[int] = []

    def on_stop(signum: int, frame: Any) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    for signum in STOP_SIGNALS:
        signal.signal(signum, on_stop)
    try:
        main()
    except (KeyboardInterrupt, SystemExit) as err:
        if not (received or isinstance(err, KeyboardInterrupt)):
            raise
        from paramcorr.sweep import interrupt_message

        signum = received[0] if received else signal.SIGINT
        print(interrupt_message(STOP_SIGNALS[signum]), file=sys.stderr)
        sys.exit(128 + signum)
