"""Each experiment logger, read back with its own tool's reader: curves plus final metrics."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from helpers import TWO_CLASSES
from paramcorr.job import run_job
from paramcorr.loggers import local_tracking_uri

# Two epochs, so the per-epoch curves have more than one point; freeze=none trains the whole
# model through Lightning (no feature cache), as the study's strategy 2 does. Two digit
# classes: what is logged, not how much data, is under test.
SHORT = ("freeze=none", "trainer.max_epochs=2", TWO_CLASSES)


def _run(cfg) -> dict:
    out = Path(cfg.paths.output_root)
    record = run_job(cfg, out)
    assert record["status"] == "completed", record["error"]
    return record


@pytest.mark.slow
def test_csv_default_gets_curves_and_final_metrics(train_config):
    cfg = train_config(*SHORT)
    assert cfg.logger._target_.endswith("csv_logger")  # CSV stays the default
    record = _run(cfg)
    with open(Path(cfg.logger.save_dir) / "csv" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert sum(1 for r in rows if r.get("val_acc")) == 2
    final = [r for r in rows if r.get("final/test_acc")]
    assert len(final) == 1
    assert math.isclose(float(final[0]["final/test_acc"]), record["metrics"]["test_acc"],
                        rel_tol=1e-6)
    assert int(float(final[0]["params/trainable"])) == record["params"]["trainable"]


def test_tensorboard_logger_writes_scalars_tensorboard_reads(train_config):
    # The `loggers` extra: a test of what is not installed is skipped, not failed.
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    EventAccumulator = accumulator.EventAccumulator  # noqa: N806 - the reader's own name

    cfg = train_config("logger=tensorboard", *SHORT)
    record = _run(cfg)
    events = EventAccumulator(str(Path(cfg.logger.save_dir) / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train_loss", "val_loss", "val_acc", "final/test_acc", "final/gen_f1",
            "params/trainable"} <= tags
    assert len(events.Scalars("val_acc")) == 2  # one point per epoch
    assert events.Scalars("final/test_acc")[-1].value == pytest.approx(
        record["metrics"]["test_acc"], rel=1e-6)
    assert events.Scalars("params/trainable")[-1].value == record["params"]["trainable"]


@pytest.mark.slow
def test_mlflow_logger_writes_a_run_mlflow_search_runs_finds(train_config, monkeypatch):
    mlflow = pytest.importorskip("mlflow")

    # Set here so monkeypatch restores it; the logger factory sets the same for file stores.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    cfg = train_config("logger=mlflow", *SHORT)
    record = _run(cfg)
    uri = local_tracking_uri(f"file:{cfg.paths.output_root}/mlruns")
    assert uri.startswith("file:///")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    runs = mlflow.search_runs(experiment_names=[cfg.name])
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["status"] == "FINISHED"
    assert run["metrics.final/test_acc"] == pytest.approx(record["metrics"]["test_acc"],
                                                          rel=1e-6)
    assert run["metrics.params/trainable"] == record["params"]["trainable"]
    assert {"metrics.train_loss", "metrics.val_acc", "metrics.val_loss"} <= set(runs.columns)
    assert run["params.model"] == "test_resnet" and run["params.freeze"] == "none"
    assert run["tags.run_dir"] == str(Path(cfg.paths.output_root).resolve())
    history = mlflow.MlflowClient(uri).get_metric_history(run["run_id"], "val_acc")
    assert len(history) == 2  # one point per epoch


def test_mlflow_tracking_uri_made_absolute_and_servers_left_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert local_tracking_uri("file:outputs/mlruns") == (tmp_path / "outputs/mlruns").as_uri()
    assert local_tracking_uri("file:///srv/mlruns") == "file:///srv/mlruns"
    assert local_tracking_uri("http://mlflow:5000") == "http://mlflow:5000"


@pytest.mark.slow
def test_wandb_logger_writes_an_offline_run(train_config, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline is the default, not the env's
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = train_config("logger=wandb", *SHORT)
    record = _run(cfg)
    runs = sorted((Path(cfg.paths.output_root) / "wandb").glob("offline-run-*"))
    assert len(runs) == 1  # written offline: no account, no network
    # The run's record file (what `wandb sync` uploads; this wandb has no public offline
    # reader): the final metrics with the record's own values, the curves, the run's axes.
    data = next(runs[0].glob("run-*.wandb")).read_bytes()
    assert b"final/test_acc" in data and b"params/trainable" in data
    assert json.dumps(record["metrics"]["test_acc"]).encode() in data
    assert b"val_acc" in data and b"train_loss" in data and b"test_resnet" in data
    debug = (runs[0] / "logs" / "debug.log").read_text()
    assert "finishing run" in debug  # closed by the job: a next job opens its own run


def test_wandb_mode_is_offline_unless_configured(monkeypatch):
    from paramcorr.errors import UserError
    from paramcorr.loggers import wandb_mode

    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert wandb_mode(None) == "offline"
    monkeypatch.setenv("WANDB_MODE", "online")
    assert wandb_mode(None) == "online" and wandb_mode("disabled") == "disabled"
    with pytest.raises(UserError, match="logger.mode=onlin is not a W&B mode"):
        wandb_mode("onlin")
