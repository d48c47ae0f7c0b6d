"""Job placement for hydra/launcher=local_gpus: the assignment rule, slots, and the callback."""

from __future__ import annotations

import fcntl
import os

import pytest
import torch
from omegaconf import OmegaConf

from paramcorr import placement
from paramcorr.cpus import available_cpus
from paramcorr.errors import UserError
from paramcorr.placement import GpuPlacement, Placement, check_capacity, plan


@pytest.fixture
def fresh_process(monkeypatch):
    """Forget this process's claimed slot and restore what pinning changes."""
    monkeypatch.setattr(placement, "_claimed", None)
    monkeypatch.setattr(placement, "_process_placement", None)
    for var in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    threads = torch.get_num_threads()
    affinity = os.sched_getaffinity(0)
    yield
    if placement._claimed is not None:
        placement._claimed[1].close()
    torch.set_num_threads(threads)
    os.sched_setaffinity(0, affinity)


def test_each_concurrent_job_gets_its_own_gpu():
    gpus = ["0", "1", "2", "3"]
    assert [plan(s, 4, gpus, cores=16).gpu for s in range(4)] == gpus
    # Fewer jobs than GPUs: the first ones, still one each.
    assert [plan(s, 2, gpus, cores=16).gpu for s in range(2)] == ["0", "1"]
    assert plan(1, 4, gpus, cores=16) == Placement(slot=1, slots=4, gpu="1", threads=4)


def test_sharing_a_gpu_only_when_asked_and_then_evenly():
    with pytest.raises(UserError, match="hydra.launcher.n_jobs=2"):
        check_capacity(3, ["0", "1"])
    with pytest.raises(UserError, match="jobs_per_gpu=2"):
        plan(0, 4, ["0", "1"], cores=8)
    assert [plan(s, 4, ["0", "1"], cores=8, jobs_per_gpu=2).gpu for s in range(4)] == [
        "0", "1", "0", "1"]
    # GPU ids are kept as given (a scheduler's CUDA_VISIBLE_DEVICES may be "4,7" or UUIDs).
    assert plan(1, 2, ["4", "7"], cores=8).gpu == "7"


@pytest.mark.parametrize(("slots", "cores", "threads"), [(2, 2, 1), (3, 16, 5), (4, 2, 1),
                                                         (1, 8, 8)])
def test_cpu_only_divides_the_cores(slots, cores, threads):
    got = [plan(s, slots, [], cores=cores) for s in range(slots)]
    assert all(p.gpu is None and p.threads == threads for p in got)


def test_discover_gpus_honours_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert placement.discover_gpus() == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert placement.discover_gpus() == []
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(placement.shutil, "which", lambda name: None)
    # No nvidia-smi: torch counts them in a subprocess (none on this machine, 2 faked).
    assert placement.discover_gpus() == [str(i) for i in range(torch.cuda.device_count())]
    monkeypatch.setattr(placement, "_torch_device_count", lambda timeout_s: 2)
    assert placement.discover_gpus() == ["0", "1"]


def test_failed_discovery_refuses_a_gpu_sweep_and_hides_gpus_from_a_cpu_one(
        monkeypatch, tmp_path, fresh_process):
    # nvidia-smi is there but hangs, and torch cannot answer either.
    def hangs(*args, **kwargs):
        raise placement.subprocess.TimeoutExpired(args[0], 30)

    monkeypatch.setattr(placement.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(placement.subprocess, "run", hangs)
    config = OmegaConf.merge(_job_config(tmp_path, 2), {"trainer": {"accelerator": "gpu"}})
    with pytest.raises(UserError, match="hydra.callbacks.gpu_placement.gpus") as refused:
        GpuPlacement().check(config)
    assert "\n" not in str(refused.value)
    # A CPU trainer goes on, and its workers see no GPU (never all of them on GPU 0).
    config.trainer.accelerator = "auto"
    callback = GpuPlacement()
    callback.on_multirun_start(config)
    callback.on_job_start(config)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
    # A GPU trainer on a machine with no GPU at all is refused too.
    monkeypatch.setattr(placement, "discover_gpus", lambda: [])
    config.trainer.accelerator = "gpu"
    with pytest.raises(UserError, match="no GPU found"):
        GpuPlacement().check(config)


def test_fewer_slots_than_jobs_is_refused_not_a_hang(tmp_path):
    with pytest.raises(UserError, match="gpu_placement.slots=1 is fewer than "
                                        "hydra.launcher.n_jobs=2"):
        GpuPlacement(slots=1, gpus="0,1").check(_job_config(tmp_path, 2))


def test_each_slot_gets_its_own_cores():
    cores = [0, 1, 2, 3, 4, 5, 6, 7]
    shares = [placement.core_share(plan(s, 3, [], cores=8), cores) for s in range(3)]
    assert shares == [[0, 1], [2, 3], [4, 5]]
    assert placement.core_share(plan(0, 1, [], cores=8), cores) == cores


def test_submitit_local_with_a_gpu_trainer_is_refused(tmp_path):
    config = OmegaConf.create({
        "hydra": {"launcher": {
            "_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
            "gpus_per_node": 1}},
        "trainer": {"accelerator": "gpu", "devices": 1}})
    with pytest.raises(UserError, match="^hydra/launcher=submitit_local cannot place GPU jobs"):
        placement.LaunchGuard().check(config)
    config.trainer.accelerator = "cpu"
    placement.LaunchGuard().on_multirun_start(config)
    config.trainer.devices = 2
    with pytest.raises(UserError, match="^trainer.devices=2"):
        placement.LaunchGuard().check(config)


def test_parse_gpus_accepts_lists_and_strings():
    assert placement.parse_gpus(None) is None
    assert placement.parse_gpus("0, 2") == ["0", "2"]
    assert placement.parse_gpus([0, 2]) == ["0", "2"]
    assert placement.parse_gpus(1) == ["1"]


def test_a_held_slot_is_skipped_and_a_process_keeps_its_slot(tmp_path, fresh_process):
    lock_dir = tmp_path / "slots"
    lock_dir.mkdir()
    # Another worker holds slot 0 (flock conflicts between open files, even in one process).
    with open(lock_dir / "slot-0.lock", "a+") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert placement.claim_slot(lock_dir, 3) == 1
        assert placement.claim_slot(lock_dir, 3) == 1  # claimed once per process
    assert (lock_dir / "slot-1.lock").read_text().strip() == str(os.getpid())


def _job_config(sweep_dir, n_jobs: int):
    return OmegaConf.create({"hydra": {"launcher": {"n_jobs": n_jobs},
                                       "sweep": {"dir": str(sweep_dir)}}})


def test_callback_pins_the_job_before_cuda_starts(tmp_path, fresh_process):
    cores = available_cpus()
    callback = GpuPlacement(gpus="5,6")
    callback.on_job_start(_job_config(tmp_path, 2))
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"  # slot 0 -> first GPU
    assert os.environ["OMP_NUM_THREADS"] == str(max(1, cores // 2))
    assert torch.get_num_threads() == max(1, cores // 2)
    if cores >= 2:  # slot 0: the first half of the cores, which loader workers inherit
        assert len(os.sched_getaffinity(0)) == cores // 2
    assert not torch.cuda.is_initialized()
    # The next job in the same worker keeps the placement (CUDA reads the variable once).
    GpuPlacement(gpus="5,6").on_job_start(_job_config(tmp_path, 2))
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"


def test_callback_refuses_more_jobs_than_gpus_before_any_job(tmp_path):
    with pytest.raises(UserError, match="2 jobs at once but 1 GPU"):
        GpuPlacement(gpus="0").check(_job_config(tmp_path, 2))
    GpuPlacement(gpus="0", jobs_per_gpu=2).on_multirun_start(_job_config(tmp_path, 2))
    GpuPlacement(gpus="").on_multirun_start(_job_config(tmp_path, -1))  # CPU: any number


def test_a_refusal_stops_the_sweep_with_one_line(tmp_path, capsys):
    # Hydra turns exceptions in callbacks into warnings and goes on: a refusal must exit.
    with pytest.raises(SystemExit) as stopped:
        GpuPlacement(gpus="0").on_multirun_start(_job_config(tmp_path, 2))
    assert stopped.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: 2 jobs at once but 1 GPU") and err.count("\n") == 1


def test_submitit_local_gpu_sweep_is_refused_before_any_job(tmp_path):
    from helpers import run_script

    # hydra/launcher=submitit_local is the optional extra `cluster`: skipped where it is absent.
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

    done = run_script("train.py", "-m", "experiment=smoke", "trainer=gpu",
                      "hydra/launcher=submitit_local", cwd=tmp_path, timeout=120)
    assert done.returncode == 1
    assert "error: hydra/launcher=submitit_local cannot place GPU jobs" in done.stderr
    assert not list(tmp_path.rglob("result.json"))
