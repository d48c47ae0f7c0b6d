"""Sweep job directory names: Hydra's override_dirname, path values shortened."""

from __future__ import annotations

from hydra._internal.config_loader_impl import get_overrides_dirname
from hydra.core.override_parser.overrides_parser import OverridesParser

from paramcorr.job_dirs import job_dirname
from paramcorr.record import RESULT_NEUTRAL_KEYS

PLAIN = ["model=resnet18", "freeze=partial", "freeze.stages=2", "lr=1e-3", "seed=0",
         "optimizer=sgd", "name=demo", "data.classes=[5,6,7]", "trainer.max_epochs=3"]


def test_plain_overrides_name_the_dir_exactly_as_hydra_does():
    # Existing sweeps must find their job dirs again after the change.
    hydra = get_overrides_dirname(OverridesParser.create().parse_overrides(PLAIN),
                                  list(RESULT_NEUTRAL_KEYS), item_sep=",", kv_sep="=")
    assert job_dirname(PLAIN, RESULT_NEUTRAL_KEYS) == hydra
    assert "name=demo" not in hydra  # a result-neutral key stays out


def test_a_path_valued_override_is_one_short_level():
    weights = "model.weights=${paths.pretrained_dir}/digits-0-4/${model.name}.safetensors"
    name = job_dirname([*PLAIN, weights], RESULT_NEUTRAL_KEYS)
    assert "/" not in name and "$" not in name and "{" not in name
    part = next(p for p in name.split(",") if p.startswith("model.weights="))
    assert len(part) < 40
    other = job_dirname([*PLAIN, weights.replace("digits-0-4", "digits-5-9")],
                        RESULT_NEUTRAL_KEYS)
    assert other != name  # another path, another dir
    assert job_dirname([*PLAIN, "model.weights=/ckpt/my_resnet.safetensors"],
                       RESULT_NEUTRAL_KEYS).count("model.weights=my_resnet-") == 1
