"""GPU benchmark: each paper backbone trained through job.py vs a plain PyTorch loop, side by side.

    python scripts/bench_gpu.py                          # on a GPU: the six paper CNNs, 224 px
    python scripts/bench_gpu.py --cpu                    # dry run: test_resnet, 32 px, CPU
    python scripts/bench_gpu.py --inputs folder          # image folder: cached inputs vs decoding

The pipeline is a real job (``paramcorr.job.run_job``, ``trainer=gpu``: precision chosen for
the GPU, cudnn benchmark, channels_last) on the digits images resized to ``--size``, whole
model trained (freeze=none), Adam, validation off; its speed is the record's
``train_samples_per_s``. The plain loop trains the same timm model on the same tensors with
the same loader, precision, channels_last and optimizer, timed the same way (whole fit).
Both count host-device synchronisations per training step with
``torch.cuda.set_sync_debug_mode("warn")``. Prints medians of ``--repeats`` runs.

``--inputs folder``: the cached-input path instead. Generated photo-like 500x375 JPEGs
(``paramcorr.sample_images``) as ``data=imagefolder``; the same job through job.py with
``data.cache_inputs=false`` (decoding and transforming every epoch) and with a warm
``data.cache_inputs=true`` (uint8 from the memory-mapped cache, normalised on the device),
interleaved; prints both rates, their ratio and the syncs per step of each.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import timm
import torch
from torch.nn import functional as F

from paramcorr import device as job_device
from paramcorr.backbones import data_config
from paramcorr.data import build_data, make_loader
from paramcorr.entry import compose_config
from paramcorr.job import run_job
from paramcorr.sample_images import write_jpeg_folder

PAPER = ["vgg16", "resnet50", "inception_v3", "legacy_xception", "mobilenetv2_100",
         "densenet121"]
SYNC = "synchronizing CUDA operation"


def overrides(name: str, args: argparse.Namespace, data: list[str] | None = None) -> list[str]:
    """A whole-model job on ``data`` (default: the digits at ``--size``)."""
    classes = "null" if args.classes is None else f"[{','.join(map(str, args.classes))}]"
    data = data or ["data=digits", f"data.classes={classes}"]
    return [f"model={name}", "model.weights=random", "freeze=none", *data,
            f"data.image_size={args.size}",
            f"data.batch_size={args.batch_size}", "trainer=cpu" if args.cpu else "trainer=gpu",
            f"trainer.max_epochs={args.epochs}", "trainer.limit_val_batches=0",
            "trainer.enable_progress_bar=false", "optimizer=adam", "lr=1e-3", "name=bench_gpu"]


class SyncCounter:
    """Counts torch's sync-debug warnings while active (CUDA only)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.count = enabled, 0

    def __enter__(self) -> SyncCounter:
        if self.enabled:
            self._catch = warnings.catch_warnings(record=True)
            self._seen = self._catch.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            torch.cuda.set_sync_debug_mode("default")
            self.count = sum(SYNC in str(w.message) for w in self._seen)
            self._catch.__exit__(*exc)


def run_pipeline(name: str, args: argparse.Namespace, out: Path) -> dict[str, float]:
    cfg = compose_config("train", overrides(name, args), out)
    with SyncCounter(not args.cpu) as syncs:
        record = run_job(cfg, out)
    if record["status"] != "completed":
        raise SystemExit(f"{name}: pipeline job {record['status']}: {record['error']}")
    steps = args.epochs * math.ceil(record["data"]["train"] / args.batch_size)
    return {"rate": record["timing"]["train_samples_per_s"],
            "syncs": syncs.count / steps if not args.cpu else math.nan,
            "mem": record["timing"]["peak_mem_mb"], "precision": record["device"]["precision"]}


def run_folder_job(name: str, args: argparse.Namespace, out: Path, images: Path,
                   cache: str) -> dict[str, float]:
    """One job on the generated image folder, ``data.cache_inputs=<cache>``."""
    data = ["data=imagefolder", f"data.root={images}", "data.classes=null",
            f"data.cache_inputs={cache}", f"paths.cache_dir={images.parent / 'cache'}"]
    cfg = compose_config("train", overrides(name, args, data), out)
    with SyncCounter(not args.cpu) as syncs:
        record = run_job(cfg, out)
    if record["status"] != "completed":
        raise SystemExit(f"{name}: job with data.cache_inputs={cache} {record['status']}: "
                         f"{record['error']}")
    steps = max(1, record["run"]["steps"] or 1)
    return {"rate": record["timing"]["train_samples_per_s"],
            "syncs": syncs.count / steps if not args.cpu else math.nan,
            "precision": record["device"]["precision"],
            "cached": bool(record.extra.get("input_cache"))}


def bench_folder(args: argparse.Namespace, scratch: Path) -> None:
    images = write_jpeg_folder(scratch / "images", args.images)
    print(f"{'cpu' if args.cpu else 'GPU'}; {args.images} generated 500x375 JPEGs at "
          f"{args.size}px, batch {args.batch_size}, {args.epochs} epochs, freeze=none, Adam; "
          f"medians of {args.repeats}")
    print(f"{'model':16s} {'precision':10s} {'decode/s':>9s} {'cached/s':>9s} {'ratio':>6s} "
          f"{'syncs/step':>10s} {'cached':>6s}")
    for name in args.models:
        # Fill the cache once, as a sweep's first job does; the timed jobs then read it.
        run_folder_job(name, args, scratch / f"{name}-fill", images, "true")
        decode, cached = [], []
        for repeat in range(args.repeats):  # interleaved, so drift hits both alike
            decode.append(run_folder_job(name, args, scratch / f"{name}-decode-{repeat}",
                                         images, "false"))
            cached.append(run_folder_job(name, args, scratch / f"{name}-cached-{repeat}",
                                         images, "true"))
        if not all(c["cached"] for c in cached) or any(d["cached"] for d in decode):
            raise SystemExit(f"{name}: the input cache was not used as asked")
        ratio = statistics.median(c["rate"] / d["rate"] for c, d in zip(cached, decode,
                                                                         strict=True))

        def median(runs: list[dict[str, float]], key: str) -> float:
            return statistics.median(r[key] for r in runs)

        print(f"{name:16s} {cached[0]['precision']:10s} {median(decode, 'rate'):9.0f} "
              f"{median(cached, 'rate'):9.0f} {ratio:6.2f} {median(decode, 'syncs'):10.1f} "
              f"{median(cached, 'syncs'):6.1f}", flush=True)


def run_plain(name: str, args: argparse.Namespace, out: Path) -> dict[str, float]:
    """The same training, hand-written: what the pipeline's overhead is measured against."""
    cfg = compose_config("train", overrides(name, args), out)
    setup = job_device.setup(cfg.trainer, cfg.channels_last)
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False,
                              num_classes=len(args.classes) if args.classes else 10)
    splits = build_data(cfg.data, data_config(model, args.size))
    model = model.to(setup.device).train()
    if setup.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(enabled=setup.precision.startswith("16"))
    loader = make_loader(splits.train, args.batch_size, shuffle=True,
                         pin_memory=setup.device.type == "cuda")
    torch.backends.cudnn.benchmark = setup.device.type == "cuda"
    job_device.reset_peak_memory(setup.device)
    samples, steps = 0, 0
    with SyncCounter(not args.cpu) as syncs:
        started = time.perf_counter()
        for _ in range(args.epochs):
            for x, y in loader:
                x = x.to(setup.device, non_blocking=True)
                if setup.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                y = y.to(setup.device, non_blocking=True)
                with torch.autocast(setup.device.type, dtype=setup.autocast or torch.float32,
                                    enabled=setup.autocast is not None):
                    loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                samples, steps = samples + len(y), steps + 1
        if setup.device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - started
    return {"rate": samples / elapsed, "syncs": syncs.count / steps if not args.cpu else math.nan,
            "mem": job_device.peak_memory_mb(setup.device), "precision": setup.precision}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=None)
    parser.add_argument("--size", type=int, default=None, help="image size (224; --cpu: 32)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=None, help="3; --cpu: 1")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--classes", type=int, nargs="+", default=None,
                        help="digit classes (all ten; --cpu: 0 1)")
    parser.add_argument("--cpu", action="store_true", help="dry run without a GPU")
    parser.add_argument("--inputs", choices=("digits", "folder"), default="digits",
                        help="folder: cached-input vs decoding jobs on generated JPEGs")
    parser.add_argument("--images", type=int, default=None,
                        help="generated JPEGs for --inputs folder (512; --cpu: 48)")
    args = parser.parse_args()
    args.models = args.models or (["test_resnet"] if args.cpu else PAPER)
    args.size = args.size or (32 if args.cpu else 224)
    args.epochs = args.epochs or (1 if args.cpu else 3)
    args.classes = args.classes or ([0, 1] if args.cpu else None)
    args.images = args.images or (48 if args.cpu else 512)
    if not args.cpu and not torch.cuda.is_available():
        raise SystemExit("no CUDA device; run on a GPU machine, or use --cpu for a dry run")
    if args.inputs == "folder":
        with tempfile.TemporaryDirectory(prefix="bench_gpu_") as scratch:
            bench_folder(args, Path(scratch))
        return
    print(f"{'cpu' if args.cpu else 'GPU'}; digits at {args.size}px, batch {args.batch_size}, "
          f"{args.epochs} epochs, freeze=none, Adam; medians of {args.repeats}")
    print(f"{'model':16s} {'precision':10s} {'pipeline/s':>10s} {'plain/s':>8s} {'ratio':>6s} "
          f"{'syncs/step':>10s} {'plain':>6s} {'pipe MiB':>9s} {'plain MiB':>9s}")
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as scratch:
        for name in args.models:
            pipe, plain = [], []
            for repeat in range(args.repeats):  # interleaved, so drift hits both alike
                pipe.append(run_pipeline(name, args, Path(scratch) / f"{name}-{repeat}"))
                plain.append(run_plain(name, args, Path(scratch) / f"{name}-plain-{repeat}"))

            def median(runs: list[dict[str, float]], key: str) -> float:
                return statistics.median(r[key] for r in runs)

            ratio = statistics.median(p["rate"] / q["rate"] for p, q in zip(pipe, plain,
                                                                             strict=True))
            print(f"{name:16s} {pipe[0]['precision']:10s} {median(pipe, 'rate'):10.0f} "
                  f"{median(plain, 'rate'):8.0f} {ratio:6.2f} {median(pipe, 'syncs'):10.1f} "
                  f"{median(plain, 'syncs'):6.1f} {median(pipe, 'mem'):9.0f} "
                  f"{median(plain, 'mem'):9.0f}", flush=True)
            if not args.cpu:
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
