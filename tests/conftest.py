"""Shared fixtures: compose the real config tree with hydra.compose and run tiny jobs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from helpers import TINY, compose_config
from paramcorr.config import register_schemas

torch.set_num_threads(min(2, torch.get_num_threads()))
register_schemas()


@pytest.fixture
def train_config(tmp_path: Path) -> Iterator[Callable[..., DictConfig]]:
    """Compose ``train.yaml`` with the tiny smoke settings plus ``overrides``."""

    def make(*overrides: str) -> DictConfig:
        return compose_config("train", [*TINY, *overrides], tmp_path / "job")

    yield make
    GlobalHydra.instance().clear()
