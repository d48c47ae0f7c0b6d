"""Benchmark the frozen-feature cache: freeze=base jobs with and without it, side by side.

    python scripts/bench_frozen.py [--model resnet18] [--epochs 10] [--repeats 3]

Prints medians of repeated runs and the ratios the targets are about:
  - one warm-cache job vs one uncached job (target: warm <= 1/5 of uncached);
  - six jobs (the optimizer x lr cells of one backbone) sharing one cache vs six uncached
    (target: >= 6x faster in total).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    common = ["data=digits", f"model={args.model}", "model.weights=random", "freeze=base",
              f"trainer.max_epochs={args.epochs}", "trainer.enable_progress_bar=false",
              "~logger", "trainer.accelerator=cpu"]
    single = {"uncached": [], "cold": [], "warm": []}
    six = {"uncached": [], "cached": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for r in range(args.repeats):
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
