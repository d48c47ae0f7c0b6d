"""Never ignore a typed key: '+key=value' for a key no part of the run reads is refused."""

from __future__ import annotations

import pytest

from helpers import run_script
from paramcorr.config import refuse_unknown_appended_keys
from paramcorr.entry import compose_config
from paramcorr.errors import UserError


def _check(overrides: list[str], tmp_path) -> None:
    cfg = compose_config("train", ["model=test_resnet", *overrides], tmp_path)
    refuse_unknown_appended_keys("train", overrides, cfg,
                                 is_group=lambda name: name in ("experiment", "logger"))


@pytest.mark.parametrize(("override", "closest"), [
    ("+optimiser.lr=0.5", "optimizer.lr=0.5"),
    ("+data.batchsize=8", "data.batch_size=8"),
    ("++model.weigths=random", "model.weights=random"),
    ("+sed=3", "seed=3"),
])
def test_an_appended_unknown_key_names_the_closest_real_one(override, closest, tmp_path):
    with pytest.raises(UserError) as err:
        _check([override], tmp_path)
    message = str(err.value)
    assert override in message and f"did you mean {closest}?" in message
    assert "\n" not in message


@pytest.mark.parametrize("override", [
    "+trainer.limit_train_batches=2",  # any lightning.Trainer argument (checked by name later)
    "++optimizer.lr=0.5",  # a key the schema has
    "+optimizer.amsgrad=true",  # the optimizer's own argument (its constructor judges it)
    "+hydra.job.env_set.FOO=1",  # Hydra's own config
])
def test_keys_the_run_reads_are_accepted(override, tmp_path):
    _check([override], tmp_path)


def test_the_cli_refuses_before_any_job_runs(tmp_path):
    done = run_script("train.py", "-m", "+optimiser.lr=0.5", "seed=0,1", "model=test_resnet",
                      f"paths.output_root={tmp_path / 'out'}", cwd=tmp_path, timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: +optimiser.lr=0.5 adds a key no part of the run reads (optimiser.lr); did "
        "you mean optimizer.lr=0.5?"]
    assert "Traceback" not in done.stderr + done.stdout
    assert not (tmp_path / "out").exists()  # no job directory, no record
