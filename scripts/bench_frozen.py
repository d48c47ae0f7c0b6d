"""Benchmark the frozen-feature cache: freeze=base jobs with and without it, side by side.

    python scripts/bench_frozen.py [--model resnet18] [--epochs 10] [--repeats 3]

Prints medians of repeated runs and the ratios the targets are about:
  - one warm-cache job vs one uncached job (target: warm <= 1/5 of uncached);
  - six jobs (the optimizer x lr cells of one backbone) sharing one cache vs six uncached
    (target: >= 6x faster in total);
  - training the head on cached features: the job's fit vs a plain PyTorch loop over the same
    feature tensors (DataLoader over a TensorDataset, same optimizer, batch size and epochs;
    no validation in either) (target: the job >= 0.8x the plain loop's speed).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from paramcorr.data import make_loader
from paramcorr.entry import compose_config
from paramcorr.job import run_job
from paramcorr.record import RunRecord

CELLS = [("adam", "1e-2"), ("adam", "1e-3"), ("adam", "1e-4"),
         ("sgd", "1e-2"), ("sgd", "1e-3"), ("sgd", "1e-4")]


def timed_job(root: Path, name: str, overrides: list[str]) -> float:
    out = root / name
    cfg = compose_config("train", overrides, out)
    started = time.perf_counter()
    record = run_job(cfg, out)
    seconds = time.perf_counter() - started
    if not isinstance(record, RunRecord) or record.status != "completed":
        why = record.error if isinstance(record, RunRecord) else record.reason
        raise SystemExit(f"benchmark job did not complete: {why}")
    return seconds


def head_vs_plain(root: Path, common: list[str], epochs: int, batch: int,
                  repeat: int) -> tuple[float, float]:
    """Fit seconds of a warm-cache job and of a plain loop over the same cached features."""
    overrides = [*common, f"paths.cache_dir={root / 'head_cache'}", f"trainer.max_epochs={epochs}",
                 f"data.batch_size={batch}", "optimizer=adam", "trainer.limit_val_batches=0",
                 f"seed={repeat}"]
    timed_job(root, f"head_fill{repeat}", overrides + ["trainer.max_epochs=0"])
    out = root / f"head{repeat}"
    cfg = compose_config("train", overrides, out)
    record = run_job(cfg, out)
    assert record["feature_cache"]["hit"], "the cache should be warm"
    entry = root / "head_cache" / "features" / record["feature_cache"]["key"]
    x = torch.from_numpy(np.load(entry / "train.features.npy"))
    y = torch.from_numpy(np.load(entry / "train.labels.npy"))
    torch.manual_seed(repeat)
    head = torch.nn.Linear(x.shape[1], int(y.max()) + 1)
    optimizer = instantiate(cfg.optimizer)(head.parameters())
    loader = make_loader(TensorDataset(x, y), batch, shuffle=True, seed=repeat)
    started = time.perf_counter()
    for _ in range(epochs):
        for xb, yb in loader:
            loss = F.cross_entropy(head(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return record["timing"]["fit_s"], time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--head-epochs", type=int, default=60)
    parser.add_argument("--head-batch", type=int, default=32)
    parser.add_argument("--head-only", action="store_true", help="only the head ratio")
    args = parser.parse_args()
    common = ["data=digits", f"model={args.model}", "model.weights=random", "freeze=base",
              f"trainer.max_epochs={args.epochs}", "trainer.enable_progress_bar=false",
              "~logger", "trainer.accelerator=cpu"]
    single = {"uncached": [], "cold": [], "warm": []}
    six = {"uncached": [], "cached": []}
    head = {"job": [], "plain": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # Microsecond-sized steps: one thread each, so a busy machine's thread contention
        # does not swamp the per-step overheads being compared.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        for r in range(args.repeats):
            job_s, plain_s = head_vs_plain(root, common, args.head_epochs, args.head_batch, r)
            head["job"].append(job_s)
            head["plain"].append(plain_s)
            print(f"repeat {r + 1}/{args.repeats}: head on cached features, job fit "
                  f"{job_s:.2f}s, plain loop {plain_s:.2f}s", flush=True)
        torch.set_num_threads(threads)
        for r in range(0 if args.head_only else args.repeats):
            cache = f"paths.cache_dir={root / f'cache{r}'}"
            single["uncached"].append(timed_job(root, f"u{r}", common + [
                cache, "freeze.cache_features=false"]))
            single["cold"].append(timed_job(root, f"c{r}", common + [cache]))
            single["warm"].append(timed_job(root, f"w{r}", common + [cache, "lr=1e-2"]))
            print(f"repeat {r + 1}/{args.repeats}: uncached {single['uncached'][-1]:.2f}s, "
                  f"cold cache {single['cold'][-1]:.2f}s, warm cache {single['warm'][-1]:.2f}s",
                  flush=True)
            cache6 = f"paths.cache_dir={root / f'six{r}'}"
            for mode in ("uncached", "cached"):
                started = time.perf_counter()
                for opt, lr in CELLS:
                    extra = ["freeze.cache_features=false"] if mode == "uncached" else []
                    timed_job(root, f"{mode}{r}-{opt}-{lr}",
                              common + [cache6, f"optimizer={opt}", f"lr={lr}", *extra])
                six[mode].append(time.perf_counter() - started)
            print(f"repeat {r + 1}/{args.repeats}: six jobs uncached {six['uncached'][-1]:.1f}s, "
                  f"sharing one cache {six['cached'][-1]:.1f}s", flush=True)
    head_ratio = statistics.median(head["plain"]) / statistics.median(head["job"])
    print(f"\nhead on cached features, {args.model}, {args.head_epochs} epochs, batch "
          f"{args.head_batch}, Adam, 1 thread; medians of {args.repeats} repeats")
    print(f"  job fit     {statistics.median(head['job']):7.2f} s")
    print(f"  plain loop  {statistics.median(head['plain']):7.2f} s   job speed = "
          f"{head_ratio:.2f}x the plain loop's (target >= 0.8: "
          f"{'met' if head_ratio >= 0.8 else 'NOT met'})")
    if args.head_only:
        return
    med = {k: statistics.median(v) for k, v in single.items()}
    med6 = {k: statistics.median(v) for k, v in six.items()}
    warm_share = med["warm"] / med["uncached"]
    speedup6 = med6["uncached"] / med6["cached"]
    print(f"\nfreeze=base, {args.model}, {args.epochs} epochs, digits; medians of "
          f"{args.repeats} repeats")
    print(f"  one job uncached     {med['uncached']:7.2f} s")
    print(f"  one job, cold cache  {med['cold']:7.2f} s")
    print(f"  one job, warm cache  {med['warm']:7.2f} s   = {warm_share:.3f} of uncached "
          f"(target <= 0.200: {'met' if warm_share <= 0.2 else 'NOT met'})")
    print(f"  six jobs uncached    {med6['uncached']:7.2f} s")
    print(f"  six jobs, one cache  {med6['cached']:7.2f} s   = {speedup6:.1f}x faster "
          f"(target >= 6x: {'met' if speedup6 >= 6 else 'NOT met'})")


if __name__ == "__main__":
    main()
