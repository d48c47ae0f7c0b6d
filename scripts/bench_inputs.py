"""Benchmark the decoded-input cache on generated ~500x375 JPEGs at 224 px.

    python scripts/bench_inputs.py [--images 300] [--model test_resnet] [--repeats 3]

Prints medians of repeated runs, side by side in one run:
  - loader throughput, images/s: decoding + resnet50's eval transform every epoch (today's
    path, `data.num_workers` automatic) vs reading the cached uint8 split, which is what the
    loader yields (normalisation runs on the device, on the batch) (target: >= 5x); and,
    for a CPU-only run, cached uint8 plus normalising each batch on the CPU;
  - one `freeze=none` job on the folder: fit time with `data.cache_inputs=false` vs a warm
    cache (the cache filled once beforehand, as the first job of a sweep does).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf

from paramcorr.backbones import create_backbone, data_config
from paramcorr.data import build_data, make_loader
from paramcorr.entry import compose_config
from paramcorr.input_cache import cached_splits
from paramcorr.job import run_job
from paramcorr.sample_images import write_jpeg_folder


def throughput(loader, norm=None) -> float:
    count = 0
    started = time.perf_counter()
    for x, _ in loader:
        if norm is not None:
            x = norm(x)  # on the batch, where the model runs (here: CPU)
        count += len(x)
    return count / (time.perf_counter() - started)


def timed_job(root: Path, data: Path, name: str, extra: list[str], args) -> float:
    overrides = ["data=imagefolder", f"data.root={data}", "data.classes=null",
                 "data.image_size=224", f"model={args.model}", "model.weights=random",
                 "freeze=none", "trainer.max_epochs=1", "trainer.limit_val_batches=0",
                 "trainer.enable_progress_bar=false", "trainer.accelerator=cpu", "~logger",
                 f"paths.cache_dir={root / 'cache'}", *extra]
    cfg = compose_config("train", overrides, root / name)
    record = run_job(cfg, root / name)
    if record["status"] != "completed":
        raise SystemExit(f"benchmark job failed: {record['error']}")
    return record["timing"]["fit_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--model", default="test_resnet")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "images"
        write_jpeg_folder(data, args.images)
        # resnet50's eval transform at 224 px (Resize 232/bicubic, CenterCrop 224, Normalize).
        dcfg = data_config(create_backbone("resnet50", "random", 4), 224)
        cfg = OmegaConf.create(dict(name="imagefolder", root=str(data), classes=None,
                                    augment=False, on_bad_image="error", split_seed=0,
                                    val_fraction=0.2, test_fraction=0.2,
                                    generalization_root=None))
        splits = build_data(cfg, dcfg)
        started = time.perf_counter()
        cached, norm, _ = cached_splits(splits, "true", 100.0, root / "bench_cache",
                                        tuple(dcfg["input_size"]))
        fill_s = time.perf_counter() - started
        decoding, reading, normalised = [], [], []
        decode_loader = make_loader(splits.train, 64, shuffle=True)
        cached_loader = make_loader(cached.train, 64, shuffle=True)
        for r in range(args.repeats):  # alternate, so machine noise hits both alike
            decoding.append(throughput(decode_loader))
            reading.append(throughput(cached_loader))
            normalised.append(throughput(cached_loader, norm))
            print(f"repeat {r + 1}/{args.repeats}: decoding {decoding[-1]:.0f} images/s, "
                  f"cached {reading[-1]:.0f} images/s, cached + CPU normalisation "
                  f"{normalised[-1]:.0f} images/s", flush=True)
        timed_job(root, data, "fill", [], args)  # fills the job's cache once
        plain_fit, cached_fit = [], []
        for r in range(args.repeats):
            plain_fit.append(timed_job(root, data, f"plain{r}", ["data.cache_inputs=false"],
                                       args))
            cached_fit.append(timed_job(root, data, f"cached{r}", ["data.cache_inputs=true",
                                                                    f"seed={r + 1}"], args))
            print(f"repeat {r + 1}/{args.repeats}: freeze=none fit, decoding "
                  f"{plain_fit[-1]:.2f}s, cached {cached_fit[-1]:.2f}s", flush=True)
        workers = decode_loader.num_workers
        # Persistent workers hold the folder open: end them before the folder is deleted.
        del decode_loader, cached_loader
    dec, cac = statistics.median(decoding), statistics.median(reading)
    ratio, cpu = cac / dec, statistics.median(normalised)
    print(f"\n{len(splits.train)} training JPEGs of 500x375 at 224 px, "
          f"{workers} decoding worker(s); "
          f"medians of {args.repeats}")
    print(f"  filling the cache (all splits, once)  {fill_s:7.2f} s")
    print(f"  loader, decoding every epoch  {dec:8.0f} images/s")
    print(f"  loader, cached uint8          {cac:8.0f} images/s   = {ratio:.1f}x "
          f"(target >= 5x: {'met' if ratio >= 5 else 'NOT met'})")
    print(f"  cached + normalised on CPU    {cpu:8.0f} images/s   = {cpu / dec:.1f}x")
    pf, cf = statistics.median(plain_fit), statistics.median(cached_fit)
    print(f"  freeze=none {args.model} fit, 1 epoch: decoding {pf:.2f} s, cached {cf:.2f} s "
          f"= {pf / cf:.1f}x")


if __name__ == "__main__":
    main()
