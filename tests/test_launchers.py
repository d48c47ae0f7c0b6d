"""Launchers keep every promise of a single job: one record each, resume, [k/N] progress.

The smoke sweep through Hydra's joblib launcher (our local_gpus preset: two jobs at once,
CPU threads divided) and submitit's local executor (every job its own process, as on Slurm),
as a user runs them; and the sbatch script the Slurm preset makes, without a cluster.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from helpers import CONF, assert_schema_valid, run_script
from paramcorr.sweep import sweep_size

SWEEP = ("outputs", "multirun", "smoke")
# submitit_local starts every job at once: one thread each keeps 8 processes on a small CI box.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def records(sweep: Path) -> dict[str, dict]:
    return {str(p.parent.relative_to(sweep)): json.loads(p.read_text())
            for p in sweep.rglob("result.json")}


@pytest.mark.slow
def test_local_gpus_launcher_runs_seeds_in_parallel_and_resumes(tmp_path):
    # Also the seeds promise: seed=0,1 composes with a preset and doubles the grid.
    args = ("-m", "experiment=smoke", "seed=0,1", "hydra/launcher=local_gpus",
            "hydra.launcher.n_jobs=2")
    done = run_script("train.py", *args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    sweep = tmp_path.joinpath(*SWEEP)
    first = records(sweep)
    assert len(first) == 16  # 8 configurations x 2 seeds, each in its own dir
    assert all(r["status"] == "completed" for r in first.values())
    for record in first.values():
        assert_schema_valid(record)
    assert sorted(r["run"]["seed"] for r in first.values()) == [0] * 8 + [1] * 8
    assert all("seed=" in name for name in first)
    # The same configuration with another seed is a separate run with another result.
    assert len({r["config_hash"] for r in first.values()}) == 16
    output = done.stdout + done.stderr
    assert "2 jobs at once on CPU" in output
    assert "[16/16]" in output  # progress from the launching process
    assert output.count("[16/16]") == 1  # ... and only from it, not repeated by workers
    # Every job ran pinned to one of the two slots (a worker keeps its slot).
    slots = {line.split("placement: ")[1].split(":")[0]
             for log in sweep.rglob("train.log") for line in log.read_text().splitlines()
             if "placement: " in line}
    assert slots <= {"slot 1/2", "slot 2/2"} and slots

    again = run_script("train.py", *args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (again.stdout + again.stderr).count("skip (already completed)") == 16
    assert records(sweep) == first
    assert "[16/16]" in again.stdout + again.stderr


@pytest.mark.slow
def test_submitit_local_launcher_writes_records_and_resumes(tmp_path):
    args = ("-m", "experiment=smoke", "hydra/launcher=submitit_local")
    done = run_script("train.py", *args, cwd=tmp_path, env=ONE_THREAD)
    assert done.returncode == 0, done.stderr[-2000:]
    sweep = tmp_path.joinpath(*SWEEP)
    first = records(sweep)
    assert len(first) == 8
    assert all(r["status"] == "completed" for r in first.values())
    # The jobs ran in their own processes; the launching one still reports progress.
    assert "[8/8]" in done.stdout + done.stderr
    logs = list((sweep / ".submitit").rglob("*_log.out"))
    assert len(logs) == 8
    assert all("| completed" in log.read_text() for log in logs)

    again = run_script("train.py", *args, cwd=tmp_path, env=ONE_THREAD)
    assert again.returncode == 0, again.stderr[-2000:]
    assert records(sweep) == first
    job_logs = "".join(log.read_text() for log in (sweep / ".submitit").rglob("*_log.out"))
    assert job_logs.count("skip (already completed)") == 8


@pytest.mark.slow
def test_a_failing_job_does_not_stop_parallel_jobs(tmp_path):
    done = run_script("train.py", "-m", "experiment=smoke", "name=mixed", "freeze=none",
                      "optimizer=adam", "model.name=test_resnet,resnet5O",
                      "hydra/launcher=local_gpus", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    found = records(tmp_path / "outputs" / "multirun" / "mixed")
    assert sorted(r["status"] for r in found.values()) == ["completed"] * 2 + ["failed"] * 2
    assert "[4/4]" in done.stdout + done.stderr


@pytest.mark.slow
def test_a_killed_worker_fails_its_job_and_the_others_complete(tmp_path):
    # The worker running one job is SIGKILLed (as the host's OOM killer would): that job
    # gets a failed record, a fresh worker takes its slot, the other seven complete.
    tests_dir = str(Path(__file__).parent)
    env = {"PYTHONPATH": os.pathsep.join([tests_dir, os.environ.get("PYTHONPATH", "")])}
    done = run_script("train.py", "-m", "experiment=smoke", "hydra/launcher=local_gpus",
                      "hydra.launcher.n_jobs=2",
                      "+hydra.callbacks.killer._target_=sigkill_callback.KillWorker",
                      "+hydra.callbacks.killer.model=test_efficientnet",
                      "+hydra.callbacks.killer.freeze=base",
                      "+hydra.callbacks.killer.optimizer=adam", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    found = records(tmp_path.joinpath(*SWEEP))
    assert len(found) == 8
    failed = {name: r for name, r in found.items() if r["status"] == "failed"}
    assert list(failed) == ["freeze=base,model=test_efficientnet,optimizer=adam"]
    record = failed["freeze=base,model=test_efficientnet,optimizer=adam"]
    assert "worker process died" in record["error"] and "SIGKILL" in record["error"]
    assert record["run"]["model"] == "test_efficientnet" and record["run"]["optimizer"] == "adam"
    assert record["schema"] == 1 and record["config_hash"]
    assert sum(r["status"] == "completed" for r in found.values()) == 7
    assert "[8/8]" in done.stdout + done.stderr


@pytest.mark.parametrize(("preset", "jobs"), [("smoke", 8), ("demo", 72), ("paper", 72),
                                              ("depth", 54)])
def test_seeds_multiply_every_preset(preset, jobs):
    params = yaml.safe_load((CONF / "experiment" / f"{preset}.yaml").read_text())["hydra"][
        "sweeper"]["params"]
    assert sweep_size([f"experiment={preset}"], params) == jobs
    assert sweep_size([f"experiment={preset}", "seed=0,1,2"], params) == 3 * jobs
    # The seed is in each job's dir name (override_dirname), so repeats never share a dir.
    hydra_defaults = yaml.safe_load((CONF / "hydra" / "default.yaml").read_text())
    assert "seed" not in hydra_defaults["job"]["config"]["override_dirname"]["exclude_keys"]


def _hydra_config(tmp_path: Path, *overrides: str):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose("train", return_hydra_config=True, overrides=[
                "experiment=paper", "hydra/launcher=slurm", f"paths.output_root={tmp_path}",
                *overrides])
    finally:
        GlobalHydra.instance().clear()


def needs_cluster_extra() -> None:
    """The Slurm preset is the optional extra `cluster` (hydra-submitit-launcher): its tests
    skip where it is not installed."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")


def test_slurm_preset_defaults_and_overrides(tmp_path):
    needs_cluster_extra()
    launcher = _hydra_config(tmp_path).hydra.launcher
    assert launcher._target_ == "hydra_plugins.paramcorr_launchers.SlurmLauncher"
    from hydra_plugins.paramcorr_launchers import SlurmLauncher

    # submitit's own Slurm launcher underneath (by name: Hydra's plugin scan may load the
    # plugin modules a second time, so class identity is not stable).
    assert "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher" in {
        f"{c.__module__}.{c.__name__}" for c in SlurmLauncher.__mro__}
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == (1, 1, 1)
    assert launcher.partition is None  # the cluster's default partition
    launcher = _hydra_config(tmp_path, "hydra.launcher.partition=gpu",
                             "hydra.launcher.timeout_min=240", "hydra.launcher.mem_gb=64",
                             "hydra.launcher.cpus_per_task=4",
                             "hydra.launcher.array_parallelism=8").hydra.launcher
    assert (launcher.partition, launcher.timeout_min, launcher.mem_gb, launcher.cpus_per_task,
            launcher.array_parallelism) == ("gpu", 240, 64, 4, 8)
    assert launcher.name == "paramcorr-paper"


class _Submitted(Exception):
    """Stands in for sbatch: the script is made, nothing is submitted."""


def test_slurm_preset_makes_the_expected_sbatch_script(tmp_path, monkeypatch):
    needs_cluster_extra()
    import submitit.slurm.slurm as slurm
    from hydra.utils import instantiate

    cfg = _hydra_config(tmp_path, "hydra.launcher.partition=gpu",
                        "hydra.launcher.timeout_min=240", "hydra.launcher.mem_gb=64",
                        "hydra.launcher.array_parallelism=2")
    scripts = []

    def fake_sbatch(self, command):
        scripts.append(self._make_submission_file_text(command, "uid"))
        raise _Submitted

    # Pretend to be on a cluster (submitit looks for srun) and catch the sbatch call.
    monkeypatch.setattr(slurm.SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    monkeypatch.setattr(slurm.SlurmExecutor, "_submit_command", fake_sbatch)
    # The plugin itself maps the preset onto submitit's parameters, as in a real launch.
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    jobs = [[f"model={m}"] for m in ("vgg16", "resnet50", "densenet121")]
    with pytest.raises(_Submitted):
        launcher.launch(jobs, initial_job_idx=0)
    lines = set(scripts[0].splitlines())
    assert {"#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1", "#SBATCH --mem=64GB",
            "#SBATCH --time=240", "#SBATCH --cpus-per-task=8", "#SBATCH --array=0-2%2",
            "#SBATCH --job-name=paramcorr-paper", "#SBATCH --ntasks-per-node=1"} <= lines
    # srun gets the CPUs too (Slurm >= 22.05 does not pass sbatch's --cpus-per-task on).
    srun = [line for line in lines if line.startswith("srun ")]
    assert len(srun) == 1 and "--cpus-per-task=8" in srun[0].split()
    # Task logs land in the sweep dir, beside the records.
    assert any(line.startswith(f"#SBATCH --output={tmp_path}/multirun/paper/.submitit/")
               for line in lines)


def test_progress_is_reported_by_the_launching_process_for_out_of_process_jobs(tmp_path,
                                                                              caplog):
    import logging
    import pickle

    from omegaconf import OmegaConf

    from paramcorr.record import write_record
    from paramcorr.sweep import STATE_FILE, SweepProgress

    config = OmegaConf.create({"hydra": {
        "sweep": {"dir": str(tmp_path)}, "sweeper": {"params": {"model": "a,b"}},
        "overrides": {"task": []},
        "launcher": {"_target_": "hydra_plugins.hydra_joblib_launcher.JoblibLauncher"}}})
    progress = SweepProgress(poll_s=0.05)
    caplog.set_level(logging.INFO, logger="paramcorr")
    progress.on_multirun_start(config)
    # Launchers pickle their callbacks for the workers: the watcher thread stays behind.
    in_worker = pickle.loads(pickle.dumps(progress))
    assert in_worker._thread is None
    # Stand for a worker process: the state file names another launching process.
    state_file = tmp_path / STATE_FILE
    state_file.write_text(json.dumps({**json.loads(state_file.read_text()), "pid": -1}))
    for k, name in enumerate(("model=a", "model=b"), start=1):
        write_record(tmp_path / name / "result.json", {"schema": 1, "status": "completed"})
        in_worker.on_job_end(config, None)  # another process: it must not print
        deadline = time.monotonic() + 10
        while not any(r.getMessage().startswith(f"[{k}/2]") for r in caplog.records):
            assert time.monotonic() < deadline, "the watcher did not report"
            time.sleep(0.02)
    progress.on_multirun_end(config)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[")]
    assert lines and lines[-1].startswith("[2/2] elapsed")
    assert len(lines) == len(set(lines))  # each count once
