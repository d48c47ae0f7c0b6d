"""Benchmark freeze=none training throughput: the pipeline vs a plain PyTorch loop.

    python scripts/bench_step.py [--model resnet18] [--epochs 3] [--repeats 3]

Same model (same init), same data and loader, batch size and optimizer; the pipeline is a
real job (Lightning Trainer + ClassifierModule) without validation. Prints the median
samples/s of each and their ratio (target: pipeline >= 0.9 of the plain loop).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from torch.nn import functional as F

from paramcorr.backbones import create_backbone, data_config
from paramcorr.data import build_data, make_loader
from paramcorr.entry import compose_config
from paramcorr.job import run_job
from paramcorr.record import RunRecord


def pipeline(root: Path, name: str, overrides: list[str]) -> float:
    cfg = compose_config("train", overrides, root / name)
    record = run_job(cfg, root / name)
    if not isinstance(record, RunRecord) or record.status != "completed":
        why = record.error if isinstance(record, RunRecord) else record.reason
        raise SystemExit(f"benchmark job did not complete: {why}")
    return record.timing["train_samples_per_s"]


def plain_loop(root: Path, overrides: list[str], epochs: int) -> float:
    cfg = compose_config("train", overrides, root / "plain")
    L.seed_everything(cfg.seed, verbose=False)
    model = create_backbone(cfg.model.name, cfg.model.weights, len(cfg.data.classes))
    splits = build_data(cfg.data, data_config(model, cfg.data.image_size))
    loader = make_loader(splits.train, cfg.data.batch_size, shuffle=True, seed=cfg.seed)
    optimizer = instantiate(cfg.optimizer)(model.parameters())
    model.train()
    samples = 0
    started = time.perf_counter()
    for _ in range(epochs):
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            samples += len(y)
    return samples / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    overrides = ["data=digits", f"model={args.model}", "model.weights=random", "freeze=none",
                 "optimizer=adam", f"trainer.max_epochs={args.epochs}",
                 "trainer.limit_val_batches=0", "trainer.enable_progress_bar=false",
                 "trainer.accelerator=cpu", "~logger"]
    ours, plain = [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for r in range(args.repeats):  # alternate, so machine noise hits both alike
            ours.append(pipeline(root, f"p{r}", overrides))
            plain.append(plain_loop(root, overrides, args.epochs))
            print(f"repeat {r + 1}/{args.repeats}: pipeline {ours[-1]:.0f} samples/s, "
                  f"plain loop {plain[-1]:.0f} samples/s", flush=True)
    ratio = statistics.median(ours) / statistics.median(plain)
    print(f"\nfreeze=none, {args.model}, {args.epochs} epochs, digits, batch 64, "
          f"{torch.get_num_threads()} threads; medians of {args.repeats} repeats")
    print(f"  pipeline    {statistics.median(ours):8.0f} samples/s")
    print(f"  plain loop  {statistics.median(plain):8.0f} samples/s")
    print(f"  ratio       {ratio:8.3f}   (target >= 0.9: {'met' if ratio >= 0.9 else 'NOT met'})")


if __name__ == "__main__":
    main()
