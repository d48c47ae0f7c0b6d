"""The device side of one job: which device, at which precision, its memory peak, compile.

On a GPU the order matters (issue 13). The launcher's placement pins the process first
(``CUDA_VISIBLE_DEVICES`` before anything touches CUDA); then :func:`setup` initialises CUDA on
the job's device; only then are memory statistics reset or read. torch's caching allocator
refuses ``reset_peak_memory_stats`` on an uninitialised device ("did you call init?"), which
used to fail every GPU job at its first CUDA call.

One job uses one device: a job is one run, and parallelism comes from running jobs side by
side (``hydra/launcher=local_gpus`` or ``slurm``), never from one job spanning devices.
"""

from __future__ import annotations

import contextlib
import logging
import resource
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from paramcorr.errors import UserError

log = logging.getLogger("paramcorr")

# Strategies that keep a job in this one process on one device.
SINGLE_DEVICE_STRATEGIES = ("auto", "single_device")
# What `precision: auto` (trainer=gpu) becomes: chosen per device at job start.
AUTO = "auto"


@dataclass(frozen=True)
class DeviceSetup:
    """Where a job runs and how: what the Trainer, the evaluation and the record get."""

    device: torch.device
    # Lightning's precision string, resolved (never "auto").
    precision: str
    channels_last: bool
    name: str
    capability: tuple[int, int] | None = None

    @property
    def autocast(self) -> torch.dtype | None:
        return autocast_dtype(self.precision)

    def describe(self) -> dict[str, Any]:
        """The record's ``device`` block."""
        return {"type": self.device.type, "name": self.name, "precision": self.precision,
                "capability": list(self.capability) if self.capability else None,
                "channels_last": self.channels_last}


def check_single_device(trainer: Mapping[str, Any]) -> None:
    """Refuse a trainer config that would make one job span devices or processes.

    Lightning re-launches the whole script per rank for DDP, so every rank would run the
    sweep and write records; ``devices=-1``/``"auto"`` or a list do the same on several GPUs.
    """
    devices = trainer.get("devices", 1)
    if isinstance(devices, bool) or str(devices).strip() not in ("1", "None"):
        raise UserError(
            f"trainer.devices={devices}: a job uses one device; set trainer.devices=1 and run "
            "jobs side by side with hydra/launcher=local_gpus (or slurm)")
    nodes = trainer.get("num_nodes", 1)
    if nodes not in (1, None):
        raise UserError(f"trainer.num_nodes={nodes}: a job runs on one node; set "
                        "trainer.num_nodes=1 and spread jobs with hydra/launcher=slurm")
    strategy = trainer.get("strategy", "auto")
    if str(strategy).lower() not in SINGLE_DEVICE_STRATEGIES:
        raise UserError(f"trainer.strategy={strategy}: a job uses one device; set "
                        "trainer.strategy=auto (jobs run in parallel through the launcher)")


def wants_cuda(accelerator: Any) -> bool:
    """Whether the trainer will run on CUDA (``auto`` picks a GPU when one is visible)."""
    text = str(accelerator).lower()
    if text in ("gpu", "cuda"):
        return True
    # is_available() asks the driver without initialising CUDA in this process.
    return text == "auto" and torch.cuda.is_available()


def native_bf16(device: torch.device) -> bool:
    """bf16 in hardware: compute capability 8.0 (Ampere) or later; V100/T4 only emulate it."""
    return torch.cuda.get_device_capability(device)[0] >= 8


def resolve_precision(requested: Any, device: torch.device) -> str:
    """``auto``: bf16-mixed where the GPU has bf16, else 16-mixed (Lightning adds the grad
    scaler), 32-true on CPU. Anything else is Lightning's own value and kept."""
    text = str(requested)
    if text != AUTO:
        if device.type == "cuda" and "bf16" in text and not native_bf16(device):
            log.warning("trainer.precision=%s on a GPU without native bf16 (emulated, slow); "
                        "trainer.precision=auto picks 16-mixed there", text)
        return text
    if device.type != "cuda":
        return "32-true"
    return "bf16-mixed" if native_bf16(device) else "16-mixed"


def autocast_dtype(precision: Any) -> torch.dtype | None:
    """The autocast dtype our own passes (evaluation, feature extraction) use."""
    text = str(precision)
    if "bf16" in text:
        return torch.bfloat16
    if text.startswith("16"):
        return torch.float16
    return None


def setup(trainer: Mapping[str, Any], channels_last: bool | None) -> DeviceSetup:
    """Choose and initialise the job's device, before the Trainer or any memory statistic.

    Runs in the job's process after placement: ``cuda:0`` is the GPU the launcher left
    visible. CUDA is initialised here, on that device, so that everything after (peak-memory
    reset, Lightning, the feature cache) finds it ready.
    """
    check_single_device(trainer)
    accelerator = str(trainer.get("accelerator", "auto")).lower()
    if not wants_cuda(accelerator):
        # Lightning's `auto` takes Apple's GPU where there is one: evaluate where it trains.
        mps = accelerator in ("auto", "mps") and torch.backends.mps.is_available()
        device = torch.device("mps" if mps else "cpu")
        precision = resolve_precision(trainer.get("precision", "32-true"), device)
        return DeviceSetup(device, precision, bool(channels_last), device.type)
    if not torch.cuda.is_available():
        raise UserError(f"trainer.accelerator={trainer.get('accelerator')} but no CUDA device is "
                        "visible to this job; use trainer=cpu, or check CUDA_VISIBLE_DEVICES")
    device = torch.device("cuda", 0)
    torch.cuda.init()
    torch.cuda.set_device(device)
    capability = torch.cuda.get_device_capability(device)
    precision = resolve_precision(trainer.get("precision", AUTO), device)
    return DeviceSetup(device, precision,
                       channels_last if channels_last is not None else True,
                       torch.cuda.get_device_name(device), tuple(capability))


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: on CUDA the allocator's, on CPU the process's resident-set peak.

    Called after feature extraction, so ``peak_mem_mb`` is the peak of this job's fit and
    evaluation whether the feature cache was cold or warm.
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    # Linux (>= 4.0): writing 5 to clear_refs resets VmHWM, the peak resident set.
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mb(device: torch.device) -> float:
    """Peak since :func:`reset_peak_memory`: CUDA memory allocated by torch on the job's GPU,
    or on CPU the process's peak resident set (VmHWM; ru_maxrss where /proc is missing)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def compile_for_training(net: torch.nn.Module) -> torch.nn.Module:
    """A compiled view of ``net`` for the training forward only, with a fresh dynamo cache.

    dynamo caches graphs per code object (``ResNet.forward``), shared by every instance of a
    class in the process, and stops compiling after ``cache_size_limit`` (8) variants: a
    sweep's worker used to hit it by its sixth job (three graphs per job: training,
    Lightning's validation, our evaluation) and then ran uncompiled. Resetting at each job
    and compiling only the training step keeps it at one graph per job (two if the last
    batch is smaller: dynamo then marks the batch dimension dynamic).
    """
    torch._dynamo.reset()
    return torch.compile(net)


def oom_message(cfg: Any, phase: str) -> str:
    """The one-line out-of-memory reason naming the batch size that was in use."""
    if phase in ("features", "evaluate"):
        what = "computing frozen features" if phase == "features" else "evaluating"
        return (f"out of memory {what} at data.eval_batch_size={cfg.data.eval_batch_size}; "
                "lower data.eval_batch_size")
    return (f"out of memory at data.batch_size={cfg.data.batch_size}; lower data.batch_size "
            "(or data.image_size)")
