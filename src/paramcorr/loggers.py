"""Experiment loggers (``logger`` group): CSV (default), TensorBoard, MLflow, W&B.

Lightning logs the per-epoch curves (train_loss, val_loss, val_acc); :func:`log_final` adds
what the run record holds after evaluation (the ``final/*`` metrics, parameter counts and the
run's axes), so a TensorBoard or MLflow view can compare runs on what the study measures.
:func:`quiet_lightning` keeps library chatter out of a sweep's one line per job.

MLflow and W&B are imported inside the functions that use them: they are optional extras
and slow to import.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger

from paramcorr.errors import UserError
from paramcorr.record import finite_number

log = logging.getLogger(__name__)


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's banners and timm's load notes would drown a sweep's one line per job."""
    names = ("lightning.pytorch", "lightning.fabric", "lightning", "timm")
    levels = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*number of training batches.*")
        warnings.filterwarnings("ignore", message=".*is smaller than the logging interval.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        # freeze=base holds the frozen backbone in eval mode on purpose.
        warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
        try:
            yield
        finally:
            for n, level in levels.items():
                logging.getLogger(n).setLevel(level)


def local_tracking_uri(uri: str) -> str:
    """``file:<relative path>`` as an absolute ``file://`` URI; other URIs unchanged.

    MLflow resolves a relative file store against the process's working directory, so a
    sweep's jobs and a later ``mlflow.search_runs`` from elsewhere would disagree.
    """
    if not uri.startswith("file:") or uri.startswith("file://"):
        return uri
    return Path(uri[len("file:"):]).expanduser().resolve().as_uri()


def _ensure_experiment(tracking_uri: str, name: str) -> None:
    """Create the experiment up front: parallel jobs racing to create it would fail."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    if client.get_experiment_by_name(name) is None:
        try:
            client.create_experiment(name)
        except MlflowException:
            if client.get_experiment_by_name(name) is None:  # not a lost race: a real error
                raise


def mlflow_logger(experiment_name: str, tracking_uri: str, run_name: str | None = None,
                  tags: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """Lightning's ``MLFlowLogger``, with a local file store that works as configured.

    A ``file:`` store is made absolute and allowed (MLflow 3 refuses its file store unless
    ``MLFLOW_ALLOW_FILE_STORE=true``; a database store needs SQLAlchemy, which mlflow-skinny
    lacks). A server (``logger.tracking_uri=http://host:5000``) is used as given.
    """
    tracking_uri = local_tracking_uri(tracking_uri)
    if tracking_uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    _ensure_experiment(tracking_uri, experiment_name)
    clean_tags = {k: str(v) for k, v in (tags or {}).items() if v not in (None, "")}
    return MLFlowLogger(experiment_name=experiment_name, tracking_uri=tracking_uri,
                        run_name=run_name or None, tags=clean_tags or None, **kwargs)


def csv_logger(save_dir: str, name: str = "csv", version: str = "") -> Any:
    """Lightning's ``CSVLogger``, keeping an earlier attempt's logs.

    A job re-run after an interrupt finds its own log dir from the attempt that did not
    finish; Lightning would warn that it deletes it and overwrite it. The whole dir is moved
    aside first, beside it (``<name>.attempt-<k>``, numbered from 1), so the new attempt
    starts in an absent dir: nothing is deleted and Lightning has nothing to warn about
    (it warns about any non-empty dir, a kept attempt inside it included).
    """
    from lightning.pytorch.loggers import CSVLogger

    log_dir = Path(save_dir) / name / str(version)
    if log_dir.is_dir() and any(log_dir.iterdir()):
        k = 1
        while log_dir.with_name(f"{log_dir.name}.attempt-{k}").exists():
            k += 1
        log_dir.rename(log_dir.with_name(f"{log_dir.name}.attempt-{k}"))
    return CSVLogger(save_dir=save_dir, name=name, version=version)


WANDB_MODES = ("online", "offline", "disabled")


def wandb_mode(mode: str | None) -> str:
    """The W&B mode a job uses: ``logger.mode`` if given, else ``$WANDB_MODE``, else offline
    (this project runs without a network by default; online is the user's choice)."""
    chosen = mode or os.environ.get("WANDB_MODE") or "offline"
    if chosen not in WANDB_MODES:
        raise UserError(f"logger.mode={chosen} is not a W&B mode; use one of "
                        f"{', '.join(WANDB_MODES)}")
    return chosen


def wandb_logger(project: str, name: str | None, save_dir: str, mode: str | None = None,
                 **kwargs: Any) -> Any:
    """Lightning's ``WandbLogger``, offline unless configured otherwise (:func:`wandb_mode`)."""
    try:
        import wandb  # noqa: F401  (WandbLogger needs it; say so before it fails obscurely)
        from lightning.pytorch.loggers import WandbLogger
    except ImportError as err:
        raise UserError("logger=wandb needs the wandb package; install the extra: "
                        "pip install -e '.[wandb]'") from err
    return WandbLogger(project=project, name=name or None, save_dir=save_dir,
                       mode=wandb_mode(mode), **kwargs)


def log_final(logger: Any, metrics: dict[str, Any], params: dict[str, int] | None,
              run: dict[str, Any], step: int) -> None:
    """Send the evaluated metrics, parameter counts and run axes to ``logger``.

    Called after evaluation, when Lightning has already finalized the logger; every logger
    here takes more data after that. A logger that cannot is warned about, never fatal: the
    run's result.json is its record, the logger a view.
    """
    if not logger:
        return
    values = {f"final/{k}": float(v) for k, v in metrics.items()
              if finite_number(v) is not None}
    values.update({f"params/{k}": float(v) for k, v in (params or {}).items()
                   if finite_number(v) is not None})
    hparams = {k: v for k, v in run.items() if v is not None}
    try:
        logger.log_hyperparams(hparams)
        logger.log_metrics(values, step=step)
        logger.save()
        logger.finalize("success")
        if type(logger).__name__ == "WandbLogger":
            # Close the W&B run: the next job of a sweep in this process would reuse it.
            logger.experiment.finish()
    except Exception as err:  # noqa: BLE001 - see docstring
        log.warning("%s could not take the final metrics: %s", type(logger).__name__, err)
