"""Benchmark training throughput per freeze strategy: the pipeline vs a plain PyTorch loop
that trains the same parameter set.

    python scripts/bench_strategies.py [--model resnet18] [--epochs 2] [--repeats 2]
                                       [--strategies base,bitfit,...]

Per strategy: the same model (same init), data, loader, batch size and optimizer; the plain
loop trains exactly the parameters the strategy sets trainable, holds the same parts in eval
mode and follows the same schedule (LP-FT: probe, then everything), so both do the same
arithmetic. The pipeline is a real job (Lightning Trainer + ClassifierModule) without
validation; freeze=base runs with freeze.cache_features=false, so it too pushes every batch
through the backbone. Prints median samples/s of each, side by side, and their ratio
(target: pipeline >= 0.9 of the plain loop).
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

from paramcorr import strategies
from paramcorr.backbones import create_backbone, data_config
from paramcorr.data import build_data, make_loader
from paramcorr.entry import compose_config
from paramcorr.job import run_job
from paramcorr.record import RunRecord
from paramcorr.strategy_names import STRATEGY_ORDER

# Keys that give each strategy one representative setting.
SETTINGS = {"partial": ["freeze.stages=2"], "lora": ["freeze.rank=8"],
            "surgical": ["freeze.block=1"], "lpft": ["freeze.probe_epochs=1"],
            "base": ["freeze.cache_features=false"]}


def pipeline(root: Path, name: str, overrides: list[str]) -> tuple[float, int]:
    cfg = compose_config("train", overrides, root / name)
    record = run_job(cfg, root / name)
    if not isinstance(record, RunRecord) or record.status != "completed":
        why = record.error if isinstance(record, RunRecord) else record.reason
        raise SystemExit(f"benchmark job did not complete: {why}")
    return record.timing["train_samples_per_s"], record.params["trainable"]


def plain_loop(root: Path, overrides: list[str], epochs: int) -> float:
    cfg = compose_config("train", overrides, root / "plain")
    L.seed_everything(cfg.seed, verbose=False)
    model = create_backbone(cfg.model.name, cfg.model.weights, len(cfg.data.classes))
    splits = build_data(cfg.data, data_config(model, cfg.data.image_size))
    loader = make_loader(splits.train, cfg.data.batch_size, shuffle=True, seed=cfg.seed)
    strategy = strategies.from_config(cfg.freeze)
    model = strategy.prepare(model, cfg.model.name)
    samples = 0
    started = time.perf_counter()
    for phase in strategy.phases(epochs):
        phase.strategy.prepare(model, cfg.model.name)
        optimizer = instantiate(cfg.optimizer)([p for p in model.parameters() if p.requires_grad])
        model.train()
        phase.strategy.hold_in_eval(model)
        for _ in range(phase.epochs):
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
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--strategies", default=",".join(STRATEGY_ORDER))
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in args.strategies.split(","):
            overrides = ["data=digits", f"model={args.model}", "model.weights=random",
                         f"freeze={name}", *SETTINGS.get(name, []), "optimizer=adam",
                         f"trainer.max_epochs={args.epochs}", "trainer.limit_val_batches=0",
                         "trainer.enable_progress_bar=false", "trainer.accelerator=cpu",
                         "~logger"]
            ours, plain = [], []
            for r in range(args.repeats):  # alternate, so machine noise hits both alike
                speed, trainable = pipeline(root, f"{name}{r}", overrides)
                ours.append(speed)
                plain.append(plain_loop(root, overrides, args.epochs))
            ratio = statistics.median(ours) / statistics.median(plain)
            results.append((name, trainable, statistics.median(ours), statistics.median(plain),
                            ratio))
            print(f"{name:9s} trainable {trainable:>11,}  pipeline {results[-1][2]:7.0f}  "
                  f"plain {results[-1][3]:7.0f} samples/s  ratio {ratio:.3f}", flush=True)
    print(f"\n{args.model}, {args.epochs} epochs, digits, batch 64, Adam, "
          f"{torch.get_num_threads()} threads; medians of {args.repeats} repeats")
    print(f"{'strategy':9s} {'trainable':>11s} {'pipeline':>9s} {'plain':>9s} {'ratio':>7s}")
    for name, trainable, ours, plain, ratio in results:
        print(f"{name:9s} {trainable:>11,} {ours:9.0f} {plain:9.0f} {ratio:7.3f}"
              f"   {'met' if ratio >= 0.9 else 'NOT met'}")


if __name__ == "__main__":
    main()
