"""Shared fixtures: compose the real config tree with hydra.compose and run tiny jobs."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from helpers import TINY, compose_config
from paramcorr.config import register_schemas

# Two test workers (pytest-xdist, `-n 2`) share the cores: a thread each, not two each, or
# torch's OpenMP threads spin against each other and every CPU-bound test slows down.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else
                      min(2, torch.get_num_threads()))
register_schemas()


@pytest.fixture
def train_config(tmp_path: Path) -> Iterator[Callable[..., DictConfig]]:
    """Compose ``train.yaml`` with the tiny smoke settings plus ``overrides``."""

    def make(*overrides: str) -> DictConfig:
        return compose_config("train", [*TINY, *overrides], tmp_path / "job")

    yield make
    GlobalHydra.instance().clear()


# What pinning a job to a slot (paramcorr.placement.apply) sets for the whole process.
PINNING_VARS = ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@pytest.fixture(autouse=True)
def _no_leaked_pinning() -> Iterator[None]:
    """A test that pins this process must not pin the tests after it (nor their subprocesses,
    which inherit the environment: a leaked CUDA_VISIBLE_DEVICES=3 reads as one GPU)."""
    saved = {var: os.environ.get(var) for var in PINNING_VARS}
    yield
    for var, value in saved.items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value
