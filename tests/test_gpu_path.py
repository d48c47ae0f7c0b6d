"""The GPU path without a GPU: a pretend CUDA device records every torch.cuda call a job makes.

torch.cuda's functions are replaced by recorders that behave like torch on a machine with one
Ampere GPU as far as a job's set-up goes, including torch's refusal to touch memory statistics
before CUDA is initialised ("Invalid device argument 0: did you call init?", the failure of
every GPU job in issue 13). The first tensor that really moves to CUDA fails ("no NVIDIA
driver"): that a job gets there proves everything before it ran in the right order.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from paramcorr import device, placement
from paramcorr.job import run_job

INIT = {"init", "_lazy_init"}
MEMORY = {"reset_peak_memory_stats", "max_memory_allocated", "memory_allocated",
          "memory_stats", "memory_reserved", "max_memory_reserved", "reset_max_memory_allocated"}


class FakeCuda:
    """One pretend GPU (capability ``major.minor``); ``calls`` lists torch.cuda calls in order."""

    def __init__(self, major: int = 8, minor: int = 0) -> None:
        self.calls: list[str] = []
        self.initialized = False
        self.capability = (major, minor)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeCuda:
        cuda = torch.cuda

        def record(name, result=None, initializes=False, needs_init=False):
            def fake(*args, **kwargs):
                self.calls.append(name)
                if needs_init and not self.initialized:
                    # What torch's caching allocator says on an uninitialised device.
                    raise RuntimeError("Invalid device argument 0: did you call init?")
                if initializes:
                    self.initialized = True
                return result() if callable(result) else result
            monkeypatch.setattr(cuda, name, fake)

        record("is_available", True)
        record("device_count", 1)
        record("is_initialized", lambda: self.initialized)
        record("init", initializes=True)
        record("_lazy_init", initializes=True)
        # torch's C++ set_device initialises CUDA itself.
        record("set_device", initializes=True)
        record("current_device", 0)
        record("get_device_capability", lambda: self.capability)
        record("get_device_name", "Fake GPU")
        record("get_device_properties", SimpleNamespace(
            major=self.capability[0], minor=self.capability[1], name="Fake GPU",
            total_memory=80 * 2**30, multi_processor_count=100))
        record("is_bf16_supported", self.capability[0] >= 8)
        record("empty_cache")
        record("synchronize")
        record("reset_peak_memory_stats", needs_init=True)
        for name in MEMORY - {"reset_peak_memory_stats"}:
            record(name, lambda: 0 if not self.initialized else 1024)
        monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)
        return self


@pytest.fixture
def fake_cuda(monkeypatch):
    for var in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(placement, "_claimed", None)
    monkeypatch.setattr(placement, "_process_placement", None)
    affinity = os.sched_getaffinity(0)
    threads = torch.get_num_threads()
    yield FakeCuda().install(monkeypatch)
    if placement._claimed is not None:
        placement._claimed[1].close()
    os.sched_setaffinity(0, affinity)
    torch.set_num_threads(threads)


def _placed_gpu_job(fake, monkeypatch, tmp_path, train_config, *overrides):
    """A worker's life: the placement callback, then a trainer=gpu job."""
    real_apply = placement.apply

    def recorded_apply(where):
        fake.calls.append(f"placement:{where.gpu}")
        real_apply(where)

    monkeypatch.setattr(placement, "apply", recorded_apply)
    sweep = OmegaConf.create({"hydra": {"launcher": {"n_jobs": 1},
                                        "sweep": {"dir": str(tmp_path / "sweep")}}})
    placement.GpuPlacement(gpus="3").on_job_start(sweep)
    cfg = train_config("trainer=gpu", *overrides)
    return run_job(cfg, tmp_path / "job")


def _assert_order(calls: list[str]) -> None:
    placed = next(i for i, c in enumerate(calls) if c.startswith("placement:"))
    inits = [i for i, c in enumerate(calls) if c in INIT]
    memory = [i for i, c in enumerate(calls) if c in MEMORY]
    assert inits, calls
    assert placed < inits[0], f"CUDA initialised before placement: {calls}"
    assert memory and inits[0] < memory[0], f"memory statistics before CUDA init: {calls}"


@pytest.mark.parametrize("freeze", ["base", "none"])
def test_gpu_job_places_then_initialises_then_reads_memory(fake_cuda, monkeypatch, tmp_path,
                                                          train_config, freeze):
    record = _placed_gpu_job(fake_cuda, monkeypatch, tmp_path, train_config, f"freeze={freeze}",
                             f"paths.cache_dir={tmp_path / 'cache'}")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    _assert_order(fake_cuda.calls)
    # It got as far as the first real tensor on the (absent) GPU: every step before passed.
    assert record["status"] == "failed"
    assert "did you call init" not in record["error"]
    # ("Found no NVIDIA driver" on a CUDA build of torch; "not compiled with CUDA" on a CPU one)
    assert "NVIDIA driver" in record["error"] or "CUDA" in record["error"], record["error"]
    assert "reset_peak_memory_stats" in fake_cuda.calls
    # The device was chosen and recorded before anything moved to it.
    assert record["device"] == {"type": "cuda", "name": "Fake GPU", "precision": "bf16-mixed",
                                "capability": [8, 0], "channels_last": True}


def test_precision_auto_is_16_mixed_on_a_gpu_without_native_bf16(monkeypatch):
    fake = FakeCuda(major=7, minor=0).install(monkeypatch)  # a V100
    setup = device.setup(OmegaConf.create({"accelerator": "gpu", "devices": 1,
                                           "precision": "auto"}), None)
    assert (setup.precision, setup.autocast) == ("16-mixed", torch.float16)
    assert fake.calls.index("init") < fake.calls.index("get_device_capability")
    fake.capability = (9, 0)  # an H100
    assert device.resolve_precision("auto", torch.device("cuda", 0)) == "bf16-mixed"
    assert device.resolve_precision("auto", torch.device("cpu")) == "32-true"
    assert device.resolve_precision("16-mixed", torch.device("cuda", 0)) == "16-mixed"


def test_launching_process_makes_no_cuda_call(fake_cuda, tmp_path):
    config = OmegaConf.create({
        "hydra": {"launcher": {"n_jobs": 2}, "sweep": {"dir": str(tmp_path)}},
        "trainer": {"accelerator": "gpu"}})
    placement.GpuPlacement(gpus="0,1").on_multirun_start(config)
    placement.LaunchGuard().on_multirun_start(config)
    assert fake_cuda.calls == []
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


@pytest.mark.parametrize(("key", "value"), [("devices", 2), ("devices", -1), ("devices", [0, 1]),
                                            ("devices", "auto"), ("strategy", "ddp"),
                                            ("num_nodes", 2)])
def test_multi_device_trainers_are_refused_naming_the_key(train_config, tmp_path, key, value):
    cfg = train_config("trainer=cpu")
    OmegaConf.update(cfg, f"trainer.{key}", value, force_add=True)
    record = run_job(cfg, tmp_path / "job")
    assert record["status"] == "failed"
    assert record["error"].startswith(f"trainer.{key}=")
    assert "\n" not in record["error"]


def test_oom_in_feature_extraction_names_the_eval_batch_size(train_config, tmp_path,
                                                             monkeypatch):
    from paramcorr import feature_cache

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(feature_cache, "load_or_compute", oom)
    cfg = train_config("freeze=base", "data.eval_batch_size=300",
                       f"paths.cache_dir={tmp_path / 'cache'}")
    record = run_job(cfg, tmp_path / "job")
    assert record["error"] == ("out of memory computing frozen features at "
                               "data.eval_batch_size=300; lower data.eval_batch_size")


def test_oom_names_the_batch_size_in_use(train_config):
    cfg = train_config("data.batch_size=48", "data.eval_batch_size=512")
    assert "data.eval_batch_size=512" in device.oom_message(cfg, "features")
    assert "data.eval_batch_size=512" in device.oom_message(cfg, "evaluate")
    assert device.oom_message(cfg, "fit").startswith("out of memory at data.batch_size=48")


def test_peak_memory_is_this_jobs_peak_after_a_reset():
    cpu = torch.device("cpu")
    big = torch.ones(64 * 2**20 // 4)  # 64 MiB resident
    big += 1
    high = device.peak_memory_mb(cpu)
    del big
    device.reset_peak_memory(cpu)
    if Path("/proc/self/clear_refs").exists():
        assert device.peak_memory_mb(cpu) < high - 32


@pytest.mark.slow  # dynamo tracing takes ~10 s a job here
def test_compile_traces_only_training_and_survives_a_sweep(train_config, tmp_path,
                                                           monkeypatch):
    # A cheap dynamo backend that counts the frames it compiles (inductor would take minutes).
    from torch._dynamo.testing import CompileCounter

    counter = CompileCounter()
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: real_compile(model, backend=counter))
    # A small recompile limit: the old whole-model compile (training, Lightning's validation
    # and our evaluation graphs, accumulating job after job) ran out of it at once.
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 2)
    frames = []
    for job in range(3):
        cfg = train_config("freeze=none", "compile=true", f"seed={job}",
                           "trainer.limit_train_batches=3")
        before = counter.frame_count
        record = run_job(cfg, tmp_path / f"job{job}")
        assert record["status"] == "completed", record["error"]
        frames.append(counter.frame_count - before)
    # Every job compiled its training forward afresh (no stale cache, no limit reached), and
    # the same number of graphs each time: nothing accumulates across a sweep's jobs.
    assert frames[0] >= 1 and frames == [frames[0]] * 3, frames
    # Only the training forward: one graph, plus one if the epoch's last batch is smaller.
    assert frames[0] <= 2


def test_loader_workers_follow_affinity_and_the_slurm_allocation(monkeypatch, tmp_path):
    from helpers import make_tree
    from paramcorr import cpus, data

    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda pid: set(range(6)))
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert cpus.available_cpus() == 6
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "4")
    assert cpus.available_cpus() == 4
    from torchvision.datasets import ImageFolder

    folder = ImageFolder(str(make_tree(tmp_path, n=2) / "train"))
    assert data.default_num_workers(folder) == 3  # 4 CPUs, one kept for the training loop
    tensors = torch.utils.data.TensorDataset(torch.zeros(4, 3))
    assert data.default_num_workers(tensors) == 0


def test_loader_workers_fit_shared_memory():
    from paramcorr.data import fit_shared_memory

    batch = 3 * 299 * 299 * 4  # one float32 image at 299 px
    # Docker's default 64 MiB /dev/shm cannot hold even one worker's two batches of 256.
    assert fit_shared_memory(8, batch, 256, 64 * 2**20) == 0
    # 8 GiB holds 7 workers' (2 x 274 MB each, within half of it).
    assert fit_shared_memory(8, batch, 256, 8 * 2**30) == 7
    assert fit_shared_memory(8, batch, 256, None) == 8  # unknown: as asked
