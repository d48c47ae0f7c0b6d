"""Benchmark training throughput per freeze strategy: the pipeline vs a plain PyTorch loop
that trains the same parameter set.

    python scripts/bench_strategies.py [--model resnet18] [--epochs 2] [--repeats 2]
                                       [--strategies base,bitfit,...]

Per strategy: the same model (same init), data, loader, batch size and optimizer; the plain
loop trains exactly the parameters the strategy sets trainable, holds the same parts in eval
mode and follows the same schedule (LP-FT: probe, then everything), so both do the same
arithmetic. The pipeline is a real job (Lightning Trainer + ClassifierModule) without
validation; freeze=base runs with freeze.cache_features=false, so it too pushes every batch
through the backbone. freeze=lpft runs as a sweep would (freeze.cache_features=auto): its
probe trains the head on the cached features, and so does the plain loop's probe, on the same
feature tensors (the job's cache entry) in the same batches; the extraction is outside both
timings (train_samples_per_s excludes it; a sweep's jobs share one entry) and is printed
beside them. ``lpft_images`` (cache off) is the probe through the backbone in both.

Two figures per strategy, each the median of the repeats, side by side:
- step: samples/s over the training steps, timed alike in both by a global optimizer
  post-step hook: from the end of each phase's first step to the end of its last, so each
  phase's set-up and first (warm-up) step are outside, while epoch boundaries, data loading and
  every Lightning hook between steps are inside. Both must take the same steps per phase (it
  is checked), and the batch sizes are the plain loop's. Target: pipeline >= 0.9 of the plain
  loop.
- fit: the job's ``train_samples_per_s`` (the whole ``trainer.fit``: the Trainer's set-up and
  tear-down too) against the plain loop's whole loop; for a short run this is dominated by
  Lightning's fixed cost, so it is printed beside, not judged.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from torch.nn import functional as F
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils.data import TensorDataset

from paramcorr import strategies
from paramcorr.backbones import create_backbone, data_config
from paramcorr.data import build_data, make_loader
from paramcorr.entry import compose_config
from paramcorr.job import run_job
from paramcorr.record import RunRecord
from paramcorr.strategy_names import STRATEGY_ORDER

# Each case: its freeze option and the keys that give it one representative setting.
CASES = {"base": ("base", ["freeze.cache_features=false"]),
         "partial": ("partial", ["freeze.stages=2"]), "lora": ("lora", ["freeze.rank=8"]),
         "surgical": ("surgical", ["freeze.block=1"]),
         "lpft": ("lpft", ["freeze.probe_epochs=1"]),
         "lpft_images": ("lpft", ["freeze.probe_epochs=1", "freeze.cache_features=false"])}


class StepClock:
    """The end time of every optimizer step while open, one list per phase (a phase is one
    optimizer: both the job and the plain loop build a new one for each)."""

    def __enter__(self) -> StepClock:
        self.phases: list[tuple[torch.optim.Optimizer, list[float]]] = []
        self._handle = register_optimizer_step_post_hook(self._step_ended)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()

    def _step_ended(self, optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        if not self.phases or self.phases[-1][0] is not optimizer:
            self.phases.append((optimizer, []))
        self.phases[-1][1].append(time.perf_counter())

    def steps(self) -> list[int]:
        return [len(times) for _, times in self.phases]

    def samples_per_s(self, batch_sizes: list[list[int]]) -> float:
        """Steady samples/s: each phase from the end of its first step to the end of its
        last; ``batch_sizes``: each phase's batch sizes, step by step."""
        if self.steps() != [len(sizes) for sizes in batch_sizes]:
            raise SystemExit(f"the job and the plain loop took different steps per phase: "
                             f"{self.steps()} vs {[len(s) for s in batch_sizes]}")
        samples = sum(sum(sizes[1:]) for sizes in batch_sizes)
        seconds = sum(times[-1] - times[0] for _, times in self.phases)
        return samples / seconds


def pipeline(root: Path, name: str, overrides: list[str]) -> tuple[float, StepClock, int,
                                                                   Path | None, float]:
    """samples/s of the job's training, its step clock, its trainable count, the
    feature-cache entry its head-only phases trained on (None: none did), and the seconds it
    spent on that entry."""
    cfg = compose_config("train", overrides, root / name)
    with StepClock() as clock:
        record = run_job(cfg, root / name)
    if not isinstance(record, RunRecord) or record.status != "completed":
        why = record.error if isinstance(record, RunRecord) else record.reason
        raise SystemExit(f"benchmark job did not complete: {why}")
    entry = None
    if record.extra.get("cached_features"):
        entry = Path(cfg.paths.cache_dir) / "features" / record.extra["feature_cache"]["key"]
    return (record.timing["train_samples_per_s"], clock, record.params["trainable"], entry,
            record.timing.get("features_s", 0.0))


def plain_loop(root: Path, overrides: list[str], epochs: int,
               features: Path | None = None) -> tuple[float, StepClock, list[list[int]]]:
    """samples/s of a plain loop, its step clock and each phase's batch sizes; ``features``:
    the cache entry the job's head-only phases trained on, whose train features the plain
    loop's head-only phases train on too."""
    cfg = compose_config("train", overrides, root / "plain")
    L.seed_everything(cfg.seed, verbose=False)
    model = create_backbone(cfg.model.name, cfg.model.weights, len(cfg.data.classes))
    splits = build_data(cfg.data, data_config(model, cfg.data.image_size))
    loader = make_loader(splits.train, cfg.data.batch_size, shuffle=True, seed=cfg.seed)
    head_loader = None
    if features is not None:
        cached = TensorDataset(torch.from_numpy(np.load(features / "train.features.npy")),
                               torch.from_numpy(np.load(features / "train.labels.npy")))
        head_loader = make_loader(cached, cfg.data.batch_size, shuffle=True, seed=cfg.seed)
    strategy = strategies.from_config(cfg.freeze)
    model = strategy.prepare(model, cfg.model.name)
    samples = 0
    batch_sizes: list[list[int]] = []
    with StepClock() as clock:
        started = time.perf_counter()
        for phase in strategy.phases(epochs):
            phase.strategy.prepare(model, cfg.model.name)
            optimizer = instantiate(cfg.optimizer)(
                [p for p in model.parameters() if p.requires_grad])
            on_features = phase.head_only and head_loader is not None
            net = model.get_classifier() if on_features else model
            model.train()
            if not on_features:
                phase.strategy.hold_in_eval(model)
            batch_sizes.append([])
            for _ in range(phase.epochs):
                for x, y in head_loader if on_features else loader:
                    loss = F.cross_entropy(net(x), y)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    samples += len(y)
                    batch_sizes[-1].append(len(y))
        fit = samples / (time.perf_counter() - started)
    return fit, clock, batch_sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--strategies", default=",".join([*STRATEGY_ORDER, "lpft_images"]),
                        help="freeze options, or lpft_images (LP-FT with the cache off)")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in args.strategies.split(","):
            freeze, settings = CASES.get(name, (name, []))
            overrides = ["data=digits", f"model={args.model}", "model.weights=random",
                         f"freeze={freeze}", *settings, "optimizer=adam",
                         f"trainer.max_epochs={args.epochs}", "trainer.limit_val_batches=0",
                         "trainer.enable_progress_bar=false", "trainer.accelerator=cpu",
                         f"paths.cache_dir={root / 'cache'}", "~logger"]
            fit_ours, fit_plain, step_ours, step_plain, extraction = [], [], [], [], []
            for r in range(args.repeats):  # alternate, so machine noise hits both alike
                speed, clock, trainable, entry, features_s = pipeline(root, f"{name}{r}",
                                                                      overrides)
                plain, plain_clock, batch_sizes = plain_loop(root, overrides, args.epochs, entry)
                fit_ours.append(speed)
                fit_plain.append(plain)
                step_ours.append(clock.samples_per_s(batch_sizes))
                step_plain.append(plain_clock.samples_per_s(batch_sizes))
                extraction.append(features_s)
            medians = [statistics.median(v) for v in (step_ours, step_plain, fit_ours, fit_plain)]
            note = (f"probe on cached features (extraction {extraction[0]:.1f} s cold, "
                    f"{extraction[-1]:.2f} s warm)" if entry is not None else "")
            results.append((name, trainable, *medians, note))
            print(f"{name:11s} trainable {trainable:>11,}  step: pipeline {medians[0]:6.0f} "
                  f"plain {medians[1]:6.0f} samples/s, ratio {medians[0] / medians[1]:.3f}; "
                  f"fit ratio {medians[2] / medians[3]:.3f}  {note}", flush=True)
    print(f"\n{args.model}, {args.epochs} epochs, digits, batch 64, Adam, "
          f"{torch.get_num_threads()} threads; medians of {args.repeats} repeats; samples/s")
    print(f"{'strategy':11s} {'trainable':>11s} {'step:ours':>10s} {'plain':>7s} {'ratio':>6s}"
          f"         {'fit:ours':>9s} {'plain':>7s} {'ratio':>6s}")
    for name, trainable, s_ours, s_plain, f_ours, f_plain, note in results:
        ratio = s_ours / s_plain
        print(f"{name:11s} {trainable:>11,} {s_ours:10.0f} {s_plain:7.0f} {ratio:6.3f} "
              f"{'met' if ratio >= 0.9 else 'NOT met':7s} {f_ours:9.0f} {f_plain:7.0f} "
              f"{f_ours / f_plain:6.3f}  {note}")


if __name__ == "__main__":
    main()
