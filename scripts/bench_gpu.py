"""GPU benchmark: each paper backbone, one epoch at 224 px on generated images, pipeline vs plain.

    python scripts/bench_gpu.py                       # on a GPU machine: the six paper CNNs
    python scripts/bench_gpu.py --cpu --models test_resnet --images 128 --size 64  # dry run

The pipeline is the Lightning Trainer with `trainer=gpu` settings (bf16 mixed precision,
cudnn benchmark) and the project's ClassifierModule (channels_last); the plain loop is
hand-written bf16 autocast PyTorch with channels_last. Both train the whole model
(freeze=none) with Adam on the same generated tensors. Prints samples/s and peak memory per
model, and the pipeline/plain ratio.
"""

from __future__ import annotations

import argparse
import time

import lightning as L
import timm
import torch
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from paramcorr.classifier import ClassifierModule
from paramcorr.data import make_loader

PAPER = ["vgg16", "resnet50", "inception_v3", "legacy_xception", "mobilenetv2_100",
         "densenet121"]


def generated(images: int, size: int, classes: int) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(images, 3, size, size, generator=g),
                         torch.randint(0, classes, (images,), generator=g))


def model_for(name: str, classes: int, channels_last: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=classes)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def run_pipeline(name: str, data: TensorDataset, args: argparse.Namespace) -> tuple[float, float]:
    gpu = not args.cpu
    model = model_for(name, args.classes, gpu)
    module = ClassifierModule(model, lambda p: torch.optim.Adam(p, lr=1e-4), args.classes,
                              channels_last=gpu)
    trainer = L.Trainer(accelerator="gpu" if gpu else "cpu", devices=1,
                        precision="bf16-mixed" if gpu else "32-true", benchmark=gpu,
                        max_epochs=2, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    loader = make_loader(data, args.batch_size, shuffle=True, pin_memory=gpu)
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    # Epoch 1 warms up (cudnn autotuning, allocator); epoch 2 is timed from the module count.
    timer = {}

    class Clock(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if gpu:
                torch.cuda.synchronize()
            timer["start"], timer["samples"] = time.perf_counter(), pl_module.samples_trained

        def on_train_epoch_end(self, trainer, pl_module):
            if gpu:
                torch.cuda.synchronize()
            timer["rate"] = ((pl_module.samples_trained - timer["samples"])
                             / (time.perf_counter() - timer["start"]))

    trainer.callbacks.append(Clock())
    trainer.fit(module, loader)
    peak = torch.cuda.max_memory_allocated() / 2**20 if gpu else float("nan")
    return timer["rate"], peak


def run_plain(name: str, data: TensorDataset, args: argparse.Namespace) -> tuple[float, float]:
    gpu = not args.cpu
    device = torch.device("cuda" if gpu else "cpu")
    model = model_for(name, args.classes, gpu).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loader = make_loader(data, args.batch_size, shuffle=True, pin_memory=gpu)
    if gpu:
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats()
    rate = 0.0
    for epoch in range(2):
        if gpu:
            torch.cuda.synchronize()
        started, samples = time.perf_counter(), 0
        for x, y in loader:
            x = x.to(device, non_blocking=True)
            if gpu:
                x = x.contiguous(memory_format=torch.channels_last)
            y = y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=gpu):
                loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            samples += len(y)
        if gpu:
            torch.cuda.synchronize()
        rate = samples / (time.perf_counter() - started) if epoch == 1 else rate
    peak = torch.cuda.max_memory_allocated() / 2**20 if gpu else float("nan")
    return rate, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=PAPER)
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--cpu", action="store_true", help="dry run without a GPU")
    args = parser.parse_args()
    if not args.cpu and not torch.cuda.is_available():
        raise SystemExit("no CUDA device; run on a GPU machine, or use --cpu for a dry run")
    device = "cpu" if args.cpu else torch.cuda.get_device_name()
    print(f"{device}; {args.images} generated images at {args.size}px, batch {args.batch_size}, "
          "freeze=none, Adam; second epoch timed")
    print(f"{'model':18s} {'pipeline/s':>11s} {'plain/s':>9s} {'ratio':>6s} "
          f"{'pipe MiB':>9s} {'plain MiB':>9s}")
    data = generated(args.images, args.size, args.classes)
    for name in args.models:
        ours, ours_mem = run_pipeline(name, data, args)
        plain, plain_mem = run_plain(name, data, args)
        print(f"{name:18s} {ours:11.0f} {plain:9.0f} {ours / plain:6.2f} "
              f"{ours_mem:9.0f} {plain_mem:9.0f}", flush=True)
        if not args.cpu:
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
