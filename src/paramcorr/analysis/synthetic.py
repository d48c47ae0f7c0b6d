"""Synthetic result.json records (schema 1) for tests, benchmarks and simulations.

``synthetic_records`` imitates a real sweep (plausible metrics, some failed and diverged
runs). ``truth_runs`` / ``truth_records`` build sweeps with a *known* truth: a chosen slope of
each outcome on log10 trainable parameters per optimizer x lr cell, a configuration effect
(shared by the seeds of one configuration, as in real fine-tuning) and seed noise. They are
what the decision rules and the false-positive simulation are checked against.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from paramcorr.record import METRIC_KEYS, Status
from paramcorr.strategy_names import HEAD_ONLY

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
                metrics: dict | None = None, status: str = Status.COMPLETED,
                frozen_stages: int | None = None, total: int | None = None,
                **run_extra: object) -> dict:
    """One schema-1 record; unspecified metrics are zero, trainable from the model table."""
    backbone, width, _ = MODELS.get(model, (1_000_000, 512, 0.8))
    head = width * N_CLASSES + N_CLASSES
    total = total if total is not None else backbone + head
    if trainable is None:
        trainable = head if freeze in HEAD_ONLY else total
    return {
        "schema": 1, "status": status,
        "error": None if status != Status.FAILED else "RuntimeError: synthetic failure",
        "run": {"model": model, "weights": "imagenet", "freeze": freeze,
                "frozen_stages": frozen_stages, "num_groups": 6, "optimizer": optimizer,
                "lr": lr, "seed": seed, "dataset": "digits", "num_classes": N_CLASSES,
                "epochs": 10, "epochs_configured": 10, "batch_size": 64, "image_size": 32,
                "eval_weights": "last",
                **run_extra},
        "params": {"total": total, "trainable": trainable, "frozen": total - trainable},
        "metrics": dict.fromkeys(METRIC_KEYS, 0.0) if metrics is None else metrics,
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
        frac = 0.0 if freeze in HEAD_ONLY else 1.0 - 0.2 * (stages or 0)
        trainable = head if freeze in HEAD_ONLY else int(head + frac * backbone)
        status = Status.COMPLETED
        u = rng.random()
        metrics = _metrics(rng, quality, freeze, frac, optimizer, lr)
        if u < p_failed:
            status, metrics = Status.FAILED, {}
        elif u < p_failed + p_diverged:
            status = Status.DIVERGED
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


# --- sweeps with a known truth -----------------------------------------------------------

X_CENTRE = 5.5  # log10 trainable around which the known slopes pivot
TRUTH_BASE = {"test_acc": 0.75, "gen_acc": 0.55}


def _slope_of(spec: dict | float, optimizer: str, lr: float) -> float:
    if isinstance(spec, dict):
        return float(spec.get((optimizer, lr), 0.0))
    return float(spec)


def truth_runs(test_slope: dict | float = 0.0, gen_slope: dict | float = 0.0,
               n_seeds: int = 3, config_sd: float = 0.03, seed_sd: float = 0.02,
               n_sweeps: int = 1, models: tuple[str, ...] = tuple(MODELS),
               freezes: tuple[str, ...] = ("base", "none"),
               optimizers: tuple[str, ...] = ("adam", "sgd"),
               lrs: tuple[float, ...] = (1e-2, 1e-3, 1e-4), rng_seed: int = 0,
               shared_sd: float = 0.0) -> pd.DataFrame:
    """A runs table (as ``collect_runs`` builds it) with known slopes per optimizer x lr cell.

    ``test_slope`` / ``gen_slope``: change of test_acc / gen_acc per tenfold more trainable
    parameters, one number for every cell or a dict ``{(optimizer, lr): slope}`` (missing
    cells 0). Each configuration (model x freeze x optimizer x lr) gets an effect drawn with
    SD ``config_sd`` that all its seeds share; each run adds noise with SD ``seed_sd``.
    F1 follows accuracy with a little noise of its own. ``n_sweeps`` > 1 stacks independent
    sweeps (column ``sweep``) for simulations; everything is drawn in one vectorised pass.
    ``shared_sd``: an effect per architecture x strategy (and sweep) that every optimizer x
    lr cell shares, as a real backbone is good or bad at every learning rate: it makes the
    cells' correlations depend on each other.
    """
    rng = np.random.default_rng(rng_seed)
    grid = np.array(list(itertools.product(range(n_sweeps), models, freezes, optimizers, lrs)),
                    dtype=object)
    n_cfg = len(grid)
    sweep, model, freeze = grid[:, 0].astype(int), grid[:, 1], grid[:, 2]
    optimizer, lr = grid[:, 3], grid[:, 4].astype(float)
    head = np.array([MODELS[m][1] * N_CLASSES + N_CLASSES for m in model])
    total = np.array([MODELS[m][0] for m in model]) + head
    trainable = np.where(np.isin(freeze, list(HEAD_ONLY)), head, total)
    x = np.log10(trainable)
    cfg = {}
    arch = pd.factorize(pd.Series([f"{s}|{m}|{f}" for s, m, f in zip(sweep, model, freeze,
                                                                    strict=True)]))[0]
    for metric, spec in (("test_acc", test_slope), ("gen_acc", gen_slope)):
        slope = np.array([_slope_of(spec, o, v) for o, v in zip(optimizer, lr, strict=True)])
        shared = rng.normal(0.0, shared_sd, arch.max() + 1)[arch] if shared_sd > 0 else 0.0
        cfg[metric] = (TRUTH_BASE[metric] + slope * (x - X_CENTRE) + shared
                       + rng.normal(0.0, config_sd, n_cfg))
    rows = np.repeat(np.arange(n_cfg), n_seeds)
    seed = np.tile(np.arange(n_seeds), n_cfg)
    n = len(rows)
    test = cfg["test_acc"][rows] + rng.normal(0.0, seed_sd, n)
    gen = cfg["gen_acc"][rows] + rng.normal(0.0, seed_sd, n)
    train = test + 0.05 + np.abs(rng.normal(0.0, 0.01, n))
    frame = pd.DataFrame({
        "run_dir": [f"sweep{s}/{i}" for s, i in zip(sweep[rows], range(n), strict=True)],
        "status": Status.COMPLETED, "error": None, "model": model[rows], "weights": "imagenet",
        "freeze": freeze[rows], "frozen_stages": np.nan, "optimizer": optimizer[rows],
        "lr": lr[rows], "seed": seed, "params_total": total[rows],
        "params_trainable": trainable[rows], "params_frozen": (total - trainable)[rows],
        "log10_trainable": x[rows], "test_acc": test,
        "test_f1": test - 0.01 + rng.normal(0.0, 0.005, n), "gen_acc": gen,
        "gen_f1": gen - 0.02 + rng.normal(0.0, 0.005, n), "gap_acc": train - test,
        "train_acc": train})
    if n_sweeps > 1:
        frame.insert(3, "sweep", sweep[rows])
    return frame


def truth_records(**kwargs: object) -> list[dict]:
    """``truth_runs`` (one sweep) as result.json records, for end-to-end tests."""
    frame = truth_runs(**kwargs)
    # The record's metrics that truth_runs draws (the others stay absent, as before).
    keys = tuple(k for k in METRIC_KEYS if k in frame.columns)
    return [make_record(r.model, r.freeze, r.optimizer, float(r.lr), int(r.seed),
                        trainable=int(r.params_trainable), total=int(r.params_total),
                        metrics={k: float(getattr(r, k)) for k in keys})
            for r in frame.itertuples()]
