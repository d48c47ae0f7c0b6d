"""The launch path's own faults (issue 16): loader workers inside local_gpus workers, a dead
worker's record, path-valued overrides, planted symlinks, file modes, progress of sweeps
given on the command line."""

from __future__ import annotations

import json
import os
import stat
import warnings
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from helpers import run_script
from paramcorr import launchers
from paramcorr.data import make_loader
from paramcorr.job_dirs import job_subdir


def _batches_from_worker_processes() -> list[list[float]]:
    """What a job does with data.num_workers > 0: iterate a loader with worker processes."""
    loader = make_loader(TensorDataset(torch.arange(12.0)), batch_size=4, shuffle=False,
                         num_workers=2)
    return [batch[0].tolist() for batch in loader]


@pytest.mark.slow
def test_loader_workers_start_inside_a_local_gpus_worker():
    # A local_gpus worker is a loky process; loader workers started there used to go through
    # loky's Popen and die with "'Process' object has no attribute 'env'".
    worker = launchers.new_worker()
    try:
        batches = worker.submit(_batches_from_worker_processes).result(timeout=120)
    finally:
        worker.shutdown(wait=True)
    assert batches == [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0], [8.0, 9.0, 10.0, 11.0]]


def test_a_dead_worker_sets_a_completed_earlier_record_aside_before_writing_failed(
        train_config, tmp_path):
    from analysis_fixtures import make_record
    from paramcorr.inputs import input_identity
    from paramcorr.record import config_hash, find_record, write_record

    cfg = train_config("model.weights=random")
    job_dir = tmp_path / "sweep" / "freeze=base"
    # A completed record of an earlier config of this dir (e.g. before its data changed),
    # and the worker died before its job could set it aside.
    earlier = make_record(status="completed")
    write_record(job_dir / "result.json", earlier)
    before = (job_dir / "result.json").read_text()

    assert launchers.record_dead_worker(cfg, job_dir, "worker process died (SIGKILL)")
    kept = list(job_dir.glob("result.completed-*.json.old"))
    assert len(kept) == 1 and kept[0].read_text() == before
    failed = find_record(job_dir / "result.json")
    assert failed.status == "failed" and failed.error == "worker process died (SIGKILL)"
    assert failed.config_hash == config_hash(cfg, input_identity(cfg))

    # A job that finished before its worker died keeps its record: nothing is written.
    finished = make_record(status="completed")
    finished["config_hash"] = failed.config_hash
    write_record(job_dir / "result.json", finished)
    assert not launchers.record_dead_worker(cfg, job_dir, "worker process died")
    assert find_record(job_dir / "result.json").status == "completed"


@pytest.mark.parametrize("override", ["model.weights=../../x", "model.weights=../../../x",
                                      "model.weights=..", "model.weights=./a/../../../b",
                                      "model.weights=/abs/w.safetensors"])
def test_a_job_dir_never_leads_out_of_its_sweep(tmp_path, override):
    sweep = tmp_path / "sweep"
    name = job_subdir(f"freeze=base,{override},optimizer=adam")
    job_dir = Path(os.path.normpath(sweep / name))
    assert job_dir.is_relative_to(sweep) and job_dir != sweep
    # Names without such components are the same as before (finished jobs are found).
    for plain in ("freeze=base,model=test_resnet", "model.weights=out/pretrained/w.pt"):
        assert job_subdir(plain) == plain


@pytest.mark.slow
def test_a_path_valued_override_writes_its_record_inside_the_sweep(tmp_path):
    done = run_script("train.py", "-m", "experiment=smoke", "model=test_resnet",
                      "freeze=base", "optimizer=adam", "model.weights=../../../x,random",
                      cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    sweep = tmp_path / "outputs" / "multirun" / "smoke"
    found = sorted(tmp_path.rglob("result.json"))
    assert len(found) == 2 and all(p.is_relative_to(sweep) for p in found)
    statuses = {json.loads(p.read_text())["run"]["weights"]: json.loads(p.read_text())["status"]
                for p in found}
    assert statuses["random"] == "completed"
    assert len(statuses) == 2 and "failed" in statuses.values()  # ../../../x does not exist


def test_a_symlink_planted_as_the_job_lock_is_replaced_not_written_through(tmp_path):
    from paramcorr.atomic import LOCK_NAME, job_lock

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / LOCK_NAME).symlink_to(victim)
    with job_lock(job_dir):
        lock = job_dir / LOCK_NAME
        assert not lock.is_symlink()
        assert lock.read_text().startswith(f"pid {os.getpid()} ")
    assert victim.read_text() == "precious\n"


def test_a_symlink_planted_as_error_log_is_replaced_not_written_through(train_config, tmp_path,
                                                                         monkeypatch):
    from paramcorr import job
    from paramcorr.job import run_job

    def crash(*args, **kwargs):
        raise RuntimeError("boom")

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "error.log").symlink_to(victim)
    monkeypatch.setattr(job, "_fit_and_evaluate", crash)
    record = run_job(train_config(), job_dir)
    assert record.status == "failed" and record.error.startswith("RuntimeError: boom")
    assert victim.read_text() == "precious\n"
    log = job_dir / "error.log"
    assert not log.is_symlink() and "RuntimeError: boom" in log.read_text()


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_records_and_weights_honour_the_umask(tmp_path, umask):
    import timm

    from paramcorr.backbones import save_checkpoint
    from paramcorr.record import write_record

    old = os.umask(umask)
    try:
        write_record(tmp_path / "job" / "result.json", {"schema": 1, "status": "completed"})
        save_checkpoint(timm.create_model("test_resnet", num_classes=2),
                        tmp_path / "job" / "model.safetensors", metadata={})
        (tmp_path / "plain.txt").write_text("an ordinary file")  # what the umask makes
    finally:
        os.umask(old)
    expected = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert expected == 0o666 & ~umask
    for name in ("result.json", "model.safetensors"):
        assert stat.S_IMODE((tmp_path / "job" / name).stat().st_mode) == expected, name


def test_a_sweep_given_on_the_command_line_shows_progress(tmp_path, caplog):
    import logging

    from omegaconf import OmegaConf

    from paramcorr.record import write_record
    from paramcorr.sweep import SweepProgress

    # No preset: Hydra's sweeper has params: null, and the sweep is in the task overrides.
    config = OmegaConf.create({"hydra": {
        "sweep": {"dir": str(tmp_path)}, "sweeper": {"params": None},
        "overrides": {"task": ["model=test_resnet,test_efficientnet", "seed=0,1,2"]},
        "launcher": {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}}})
    progress = SweepProgress()
    caplog.set_level(logging.INFO, logger="paramcorr")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Hydra turns a callback's exception into a warning
        progress.on_multirun_start(config)
        for k in range(1, 3):
            write_record(tmp_path / f"job{k}" / "result.json", {"schema": 1})
            progress.on_job_end(config, None)
    lines = [r.getMessage() for r in caplog.records]
    assert f"sweep {tmp_path}: 6 jobs (0 records already there)" in lines
    assert [line.split(" elapsed")[0] for line in lines if line.startswith("[")] == [
        "[1/6]", "[2/6]"]


def test_a_dead_worker_record_waits_for_the_lock_then_leaves_a_running_job_alone(
        train_config, tmp_path):
    from paramcorr.atomic import job_lock

    cfg = train_config("model.weights=random")
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    with job_lock(job_dir):  # another launch runs this job (or loader workers still hold it)
        assert not launchers.record_dead_worker(cfg, job_dir, "died", lock_wait_s=0.6)
    assert not (job_dir / "result.json").exists()
    assert launchers.record_dead_worker(cfg, job_dir, "died", lock_wait_s=0.6)
