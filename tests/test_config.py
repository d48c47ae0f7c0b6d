"""The config schema: choices refused at composition, the tri-state, defaults stated once."""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from pathlib import Path

import pytest
import yaml
from hydra.errors import ConfigCompositionException
from lightning import Trainer
from omegaconf import OmegaConf

from helpers import CONF, TINY, compose_config, run_script
from paramcorr import config as schema
from paramcorr.config import AutoBool, Choice, TrainConfig


def compose(tmp_path: Path, *overrides: str):
    return compose_config("train", [*TINY, *overrides], tmp_path / "job")


def composition_error(tmp_path: Path, *overrides: str) -> str:
    with pytest.raises(ConfigCompositionException) as info:
        compose(tmp_path, *overrides)
    return f"{info.value}\n{info.value.__cause__}"


def _fields_of_type(cls: type, wanted: type, prefix: str) -> list[str]:
    hints = typing.get_type_hints(cls)
    return [f"{prefix}{f.name}" for f in dataclasses.fields(cls)
            if isinstance(hints[f.name], type) and issubclass(hints[f.name], wanted)]


CHOICE_KEYS = [key for cls, prefix in ((TrainConfig, ""), (schema.DataConfig, "data."),
                                       (schema.FreezeConfig, "freeze."))
               for key in _fields_of_type(cls, Choice, prefix)]
AUTO_BOOL_KEYS = [key for cls, prefix in ((schema.DataConfig, "data."),
                                          (schema.FreezeConfig, "freeze."))
                  for key in _fields_of_type(cls, AutoBool, prefix)]


def test_every_choice_named_by_the_issue_is_typed():
    assert {"freeze.strategy", "eval_weights", "freeze.out_of_range", "data.on_bad_image",
            "freeze.cache_features", "data.name"} <= set(CHOICE_KEYS)


@pytest.mark.parametrize("key", CHOICE_KEYS)
def test_a_choice_in_another_case_or_misspelt_is_refused_at_composition(tmp_path, key):
    cfg = compose(tmp_path)
    value = str(OmegaConf.select(cfg, key))
    for wrong in (value.upper(), value + "x"):
        message = composition_error(tmp_path, f"{key}={wrong}")
        assert f"full_key: {key}" in message, message
        assert f"Invalid value '{wrong}'" in message


@pytest.mark.parametrize("key", CHOICE_KEYS)
def test_every_choice_value_composes_and_compares_as_a_string(tmp_path, key):
    enum_type = type(OmegaConf.select(compose(tmp_path), key))
    for member in enum_type:
        got = OmegaConf.select(compose(tmp_path, f"{key}={member.value}"), key)
        assert got is member and got == member.value and f"{got}" == member.value


@pytest.mark.parametrize("key", AUTO_BOOL_KEYS)
def test_auto_bool_takes_auto_true_false_and_nothing_else(tmp_path, key):
    assert OmegaConf.select(compose(tmp_path), key) is AutoBool.auto  # the schema's default
    # Hydra parses `true` / `false` as bools, `auto` as a string: all three are the tri-state.
    for word, member in (("true", AutoBool.true), ("false", AutoBool.false),
                         ("auto", AutoBool.auto), ("TRUE", AutoBool.true)):
        assert OmegaConf.select(compose(tmp_path, f"{key}={word}"), key) is member
    for wrong in ("maybe", "AUTO", "1", "yes"):
        message = composition_error(tmp_path, f"{key}={wrong}")
        assert f"full_key: {key}" in message and "expected one of [auto, true, false]" in message


def test_auto_bool_decides():
    assert [AutoBool.auto.decide(auto=a) for a in (True, False)] == [True, False]
    assert [AutoBool.true.decide(auto=a) for a in (True, False)] == [True, True]
    assert [AutoBool.false.decide(auto=a) for a in (True, False)] == [False, False]


def test_a_typed_config_is_a_complete_train_config(tmp_path):
    cfg = compose(tmp_path, "freeze=partial", "freeze.stages=2")
    typed = OmegaConf.to_object(cfg)
    assert isinstance(typed, TrainConfig)
    assert typed.freeze.strategy is schema.FreezeStrategy.partial and typed.freeze.stages == 2
    assert isinstance(typed.data, schema.DataConfig) and typed.data.name == "digits"
    assert set(cfg) == {f.name for f in dataclasses.fields(TrainConfig)}


def test_trainer_takes_any_lightning_argument_without_a_plus(tmp_path):
    cfg = compose(tmp_path, "trainer.gradient_clip_val=0.5", "trainer.limit_train_batches=3")
    assert cfg.trainer.gradient_clip_val == 0.5 and cfg.trainer.limit_train_batches == 3
    # The rest of the config stays closed: a misspelt top-level key is a composition error.
    assert "Could not override 'sed'" in composition_error(tmp_path, "sed=1")


def _lightning_defaults() -> dict[str, typing.Any]:
    return {name: p.default for name, p in inspect.signature(Trainer.__init__).parameters.items()
            if name != "self"}


def test_trainer_group_holds_only_what_we_set():
    defaults = _lightning_defaults()
    for name in ("default", "cpu"):
        values = yaml.safe_load((CONF / "trainer" / f"{name}.yaml").read_text())
        values.pop("defaults", None)
        for key, value in values.items():
            assert key in defaults, key
            assert value != defaults[key], f"trainer/{name}.yaml restates {key}={value}"


defaults_entry = re.compile(r"/schema/freeze/(\w+)@_here_")
SCHEMA_OF_GROUP = {"data": schema.DataConfig, "model": schema.ModelConfig,
                   "freeze": schema.FreezeConfig}


def _schema_defaults(cls: type) -> dict[str, typing.Any]:
    return OmegaConf.to_container(OmegaConf.structured(cls), resolve=False)


@pytest.mark.parametrize("group", ["data", "model", "freeze", "optimizer"])
def test_group_options_state_only_what_differs_from_the_schema(group):
    for path in sorted((CONF / group).glob("*.yaml")):
        values = yaml.safe_load(path.read_text()) or {}
        values.pop("defaults", None)
        cls = SCHEMA_OF_GROUP.get(group) or {"adam": schema.AdamConfig,
                                             "sgd": schema.SGDConfig}[path.stem]
        if group == "freeze":  # a strategy with keys of its own has its own schema
            cls = schema.FREEZE_SCHEMAS[defaults_entry.search(path.read_text()).group(1)]
        defaults = _schema_defaults(cls)
        for key, value in values.items():
            assert key in defaults, f"{path.name}: {key} is not in {cls.__name__}"
            assert value != defaults[key], f"{path.name} restates the default {key}={value}"


@pytest.mark.parametrize(("path", "cls"), [
    ("train.yaml", schema.TrainConfig), ("pretrain.yaml", schema.PretrainConfig),
    ("paths/default.yaml", schema.PathsConfig)])
def test_primary_configs_state_no_schema_default_again(path, cls):
    """Each default is stated once (the schema): a YAML value equal to it would drift apart
    from it the day one of them changes (paths.cache_dir once had two different defaults)."""
    values = OmegaConf.to_container(OmegaConf.load(CONF / path), resolve=False) or {}
    defaults = _schema_defaults(cls)
    for key, value in values.items():
        if key in ("defaults", "hydra") or isinstance(value, dict):
            continue  # group composition, Hydra's own settings, and nested group values
        assert key in defaults, f"{path}: {key} is not in {cls.__name__}"
        assert value != defaults[key], f"{path} restates the default {key}={value}"


def test_a_misspelt_choice_stops_a_multirun_before_any_job(tmp_path):
    done = run_script("train.py", "-m", *TINY, "name=typo", "eval_weights=last,bset",
                      cwd=tmp_path, timeout=300)
    assert done.returncode != 0
    assert "Traceback" not in done.stdout + done.stderr
    assert "eval_weights=bset" in done.stderr and "full_key: eval_weights" in done.stderr
    assert "expected one of [last, best]" in done.stderr
    sweep = tmp_path / "outputs" / "multirun" / "typo"
    # Hydra composes every job of the batch before launching: no job ran, not even `last`.
    assert not list(tmp_path.rglob("result.json"))
    assert not sweep.exists() or not [p for p in sweep.rglob("*") if p.is_dir()]


def test_a_misspelt_tri_state_stops_a_multirun_before_any_job(tmp_path):
    done = run_script("train.py", "-m", *TINY, "name=typo", "freeze.cache_features=maybe",
                      "seed=0,1", cwd=tmp_path, timeout=300)
    assert done.returncode != 0
    assert "full_key: freeze.cache_features" in done.stderr
    assert not list(tmp_path.rglob("result.json"))


def test_one_rule_decides_every_auto_true_false_setting(caplog):
    """TriState: auto -> on where it can be (one log line per reason it cannot), true -> on or
    a one-line refusal, false -> off and silent; both caches decide through it."""
    import logging

    from omegaconf import OmegaConf

    from paramcorr.config import AutoBool, TriState
    from paramcorr.errors import UserError

    said_by = logging.getLogger("paramcorr.test_tristate")
    cfg = OmegaConf.create({"data": {"cache_inputs": True}, "freeze": {"cache_features": "auto"}})
    required = TriState.of(cfg, "data.cache_inputs", "input cache", "decode every epoch",
                           "decoding every epoch", said_by)
    assert required.value is AutoBool.true and required.required and required.wanted
    assert required.decide(auto=False) is True
    with pytest.raises(UserError) as err:
        required.cannot("the splits need 9.0 GB")
    assert str(err.value) == ("data.cache_inputs=true but the splits need 9.0 GB; set "
                              "data.cache_inputs=auto (or false) to decode every epoch")
    auto = TriState.of(cfg, "freeze.cache_features", "feature cache",
                       "train through the backbone", "training through the backbone", said_by)
    assert (auto.decide(auto=True), auto.decide(auto=False)) == (True, False)
    with caplog.at_level(logging.INFO, logger="paramcorr.test_tristate"):
        assert auto.cannot("data.augment=true changes the inputs every epoch") is False
        off = TriState("data.cache_inputs", AutoBool.false, "input cache", "x", "y", said_by)
        assert not off.wanted and off.decide(auto=True) is False
        assert off.cannot("anything") is False
    assert [r.getMessage() for r in caplog.records] == [
        "feature cache off: data.augment=true changes the inputs every epoch; training "
        "through the backbone"]
