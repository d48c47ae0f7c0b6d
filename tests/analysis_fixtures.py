"""Synthetic result.json records for the analysis tests and benchmark (schema 1)."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np

N_CLASSES = 5
N_TEST = 180  # accuracies are multiples of 1/N_TEST, as on a real test split

# name: (total backbone parameters, feature width, quality, stage fractions of the backbone)
MODELS = {
    "vgg16": (134_260_544, 4096, 0.80),
    "resnet50": (23_508_032, 2048, 0.88),
    "inception_v3": (21_785_888, 2048, 0.86),
    "legacy_xception": (20_806_952, 2048, 0.87),
    "mobilenetv2_100": (2_223_872, 1280, 0.84),
    "densenet121": (6_953_856, 1024, 0.89),
}
LR_EFFECT = {("adam", 1e-2): -0.25, ("adam", 1e-3): 0.0, ("adam", 1e-4): 0.02,
             ("sgd", 1e-2): 0.01, ("sgd", 1e-3): -0.03, ("sgd", 1e-4): -0.15}


def make_record(model: str = "resnet50", freeze: str = "base", optimizer: str = "adam",
                lr: float = 1e-3, seed: int = 0, trainable: int | None = None,
                metrics: dict | None = None, status: str = "completed",
                frozen_stages: int | None = None, total: int | None = None,
                **run_extra: object) -> dict:
    """One schema-1 record; unspecified metrics are zero, trainable from the model table."""
    backbone, width, _ = MODELS.get(model, (1_000_000, 512, 0.8))
    head = width * N_CLASSES + N_CLASSES
    total = total if total is not None else backbone + head
    if trainable is None:
        trainable = head if freeze == "base" else total
    keys = ("train_acc", "train_loss", "val_acc", "val_loss", "test_acc", "test_f1",
            "test_loss", "gen_acc", "gen_f1", "gap_acc", "gap_loss")
    return {
        "schema": 1, "status": status,
        "error": None if status != "failed" else "RuntimeError: synthetic failure",
        "run": {"model": model, "weights": "imagenet", "freeze": freeze,
                "frozen_stages": frozen_stages, "num_groups": 6, "optimizer": optimizer,
                "lr": lr, "seed": seed, "dataset": "digits", "num_classes": N_CLASSES,
                "epochs": 10, "batch_size": 64, "image_size": 32, "eval_weights": "last",
                **run_extra},
        "params": {"total": total, "trainable": trainable, "frozen": total - trainable},
        "metrics": dict.fromkeys(keys, 0.0) if metrics is None else metrics,
        "timing": {"fit_s": 1.0, "eval_s": 0.1, "train_samples_per_s": 500.0,
                   "peak_mem_mb": 800.0},
        "config_hash": f"{model}-{freeze}-{frozen_stages}-{optimizer}-{lr!r}-{seed}",
    }


def write_record(run_dir: Path, record: dict | str) -> Path:
    """Write a record (or raw text, for corrupt files) as run_dir/result.json."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "result.json"
    path.write_text(record if isinstance(record, str) else json.dumps(record))
    return path


def _metrics(rng: np.random.Generator, quality: float, freeze: str, frac: float,
             optimizer: str, lr: float) -> dict:
    """Plausible metrics: fine-tuning helps a little, a bad lr hurts a lot, plus noise."""
    test = quality + 0.05 * frac + LR_EFFECT.get((optimizer, lr), 0.0)
    test = float(np.clip(test + rng.normal(0, 0.02), 0.2, 1.0))
    test = round(test * N_TEST) / N_TEST
    train = float(np.clip(test + abs(rng.normal(0.03 + 0.05 * frac, 0.02)), 0, 1))
    gen = round(float(np.clip(test - 0.2 - rng.normal(0, 0.04), 0.1, 1)) * N_TEST) / N_TEST
    train_loss = float(-math.log(max(train, 1e-3)) + abs(rng.normal(0, 0.02)))
    test_loss = float(-math.log(max(test, 1e-3)) + abs(rng.normal(0, 0.05)))
    return {"train_acc": train, "train_loss": train_loss,
            "val_acc": float(np.clip(test + rng.normal(0, 0.01), 0, 1)),
            "val_loss": float(test_loss + rng.normal(0, 0.02)), "test_acc": test,
            "test_f1": float(np.clip(test - abs(rng.normal(0.01, 0.01)), 0, 1)),
            "test_loss": test_loss, "gen_acc": gen,
            "gen_f1": float(np.clip(gen - abs(rng.normal(0.02, 0.01)), 0, 1)),
            "gap_acc": train - test, "gap_loss": test_loss - train_loss}


def synthetic_records(n_runs: int = 144, models: tuple[str, ...] = tuple(MODELS),
                      freezes: tuple[str, ...] = ("base", "none"),
                      optimizers: tuple[str, ...] = ("adam", "sgd"),
                      lrs: tuple[float, ...] = (1e-2, 1e-3, 1e-4),
                      partial_stages: tuple[int, ...] = (), p_diverged: float = 0.03,
                      p_failed: float = 0.03, rng_seed: int = 0) -> list[dict]:
    """n_runs records cycling the grid (seed outermost), some diverged or failed."""
    rng = np.random.default_rng(rng_seed)
    strategies = [(f, None) for f in freezes] + [("partial", s) for s in partial_stages]
    grid = list(itertools.product(models, strategies, optimizers, lrs))
    records = []
    for i in range(n_runs):
        model, (freeze, stages), optimizer, lr = grid[i % len(grid)]
        seed = i // len(grid)
        backbone, width, quality = MODELS[model]
        head = width * N_CLASSES + N_CLASSES
        total = backbone + head
        frac = {"base": 0.0, "none": 1.0}.get(freeze, 1.0 - 0.2 * (stages or 0))
        trainable = head if freeze == "base" else int(head + frac * backbone)
        status = "completed"
        u = rng.random()
        metrics = _metrics(rng, quality, freeze, frac, optimizer, lr)
        if u < p_failed:
            status, metrics = "failed", {}
        elif u < p_failed + p_diverged:
            status = "diverged"
            metrics = {k: (math.nan if "loss" in k else v) for k, v in metrics.items()}
        records.append(make_record(model, freeze, optimizer, lr, seed, trainable=trainable,
                                   metrics=metrics, status=status, frozen_stages=stages,
                                   total=total))
    return records


def write_sweep(root: Path, records: list[dict], start: int = 0) -> list[Path]:
    """Records into Hydra-style numbered job dirs root/<i>/result.json (plus .hydra/)."""
    paths = []
    for i, record in enumerate(records, start=start):
        job = root / str(i)
        (job / ".hydra").mkdir(parents=True, exist_ok=True)
        paths.append(write_record(job, record))
    return paths


def write_junk(root: Path) -> dict[str, int]:
    """The unreadable files a real sweep can hold, and how many of each were written."""
    good = json.dumps(make_record("resnet50", seed=999))
    write_record(root / "junk_invalid", "{not json")
    write_record(root / "junk_truncated", good[: len(good) // 2])
    write_record(root / "junk_empty", "")
    write_record(root / "junk_foreign", json.dumps({"loss": [1, 2, 3], "name": "other"}))
    write_record(root / "junk_list", json.dumps([1, 2, 3]))
    write_record(root / "junk_future", json.dumps({**make_record("resnet50", seed=998),
                                                   "schema": 2}))
    tmp = root / "junk_tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "result.json.tmp123").write_text(good)
    (tmp / "result.tmp").write_text(good)
    analysis = root / "analysis" / "old"
    analysis.mkdir(parents=True, exist_ok=True)
    (analysis / "result.json").write_text(good)  # inside an analysis dir: never read
    return {"invalid JSON": 3, "not a run record": 2, "future schema": 1, "temp": 2}
