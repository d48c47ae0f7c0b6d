"""A Hydra callback that SIGKILLs the worker running one chosen job (stands for the OOM killer).

Used by tests/test_launchers.py through ``+hydra.callbacks.killer._target_=...``; the workers
import it from tests/ (PYTHONPATH).
"""

from __future__ import annotations

import os
import signal
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class KillWorker(Callback):
    def __init__(self, model: str, freeze: str, optimizer: str) -> None:
        self.model, self.freeze, self.optimizer = model, freeze, optimizer

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if (config.model.name == self.model and config.freeze.strategy == self.freeze
                and config.optimizer._target_.lower().endswith(self.optimizer)):
            os.kill(os.getpid(), signal.SIGKILL)
