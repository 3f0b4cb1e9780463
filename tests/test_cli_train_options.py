"""`fluxedit train`'s flags are the fields of TrainingOptions, with the defaults and limits of that one model."""

from __future__ import annotations

import re

import pytest
import typer

from fluxedit.cli import app
from fluxedit.schema import InputError
from fluxedit.training_options import (
    TrainingHyperparameters,
    TrainingInput,
    TrainingOptions,
    validated_training_input,
    validated_training_options,
)

ENGINE_AND_PATHS = {"data", "out", "work_dir", "model", "components", "device", "dtype", "text_encoder_device",
                    "quantize", "text_encoder_quantize"}  # fmt: skip


def _train_params() -> dict:
    command = typer.main.get_command(app).commands["train"]
    return {param.name: param for param in command.params}


def test_every_training_option_is_a_flag_and_every_flag_an_option():
    assert set(_train_params()) - ENGINE_AND_PATHS == set(TrainingOptions.model_fields)


def test_an_unset_flag_takes_the_models_default():
    for name, param in _train_params().items():
        if name in TrainingOptions.model_fields:
            assert param.default is None, f"--{name} has a default of its own; the model's must apply"


@pytest.mark.parametrize("name", sorted(TrainingOptions.model_fields))
def test_the_default_a_help_text_names_is_the_models(name):
    text = _train_params()[name].help
    default = TrainingOptions.model_fields[name].default
    number = re.search(r"default ([0-9.e+-]+)\)", text)
    word = re.search(r"(\w+) \(the default\)", text)
    if number:
        assert float(number.group(1)) == default, text
    elif word:
        assert word.group(1) == str(default), text
    else:  # no value named: the default is None (the rank, no caption, on for CUDA...)
        assert default is None, f"--{name}'s help should name its default {default!r}: {text!r}"


def test_the_api_takes_the_hyperparameters_and_a_name_but_not_how_the_server_runs_them():
    assert set(TrainingInput.model_fields) == set(TrainingHyperparameters.model_fields) | {"name"}
    with pytest.raises(InputError) as refused:
        validated_training_input({"checkpoint_every": 5})
    assert str(refused.value).startswith("input.checkpoint_every: is not a known input")
    assert validated_training_options({"checkpoint_every": 5}).checkpoint_every == 5


def test_limits_name_the_field():
    with pytest.raises(InputError, match=r"input.rank: must be at least 1 \(got 0\)"):
        validated_training_input({"rank": 0})
    with pytest.raises(InputError, match=r"keep_checkpoints: must be at least 1 \(got 0\)"):
        validated_training_options({"keep_checkpoints": 0})
    with pytest.raises(InputError, match="steps: must be a number, not true or false"):
        validated_training_options({"steps": True})
