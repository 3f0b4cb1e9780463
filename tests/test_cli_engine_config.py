"""`fluxedit edit` builds its engine from the same Settings as train and serve: every FLUXEDIT_* engine option
applies, and its flag overrides it. Run as a user runs it: a real process on the tiny model."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers import encoded, pattern
from tests.test_cli import FLUXEDIT


def fluxedit(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLUXEDIT_")} | env
    return subprocess.run([FLUXEDIT, *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=300)


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "photo.png"
    path.write_bytes(encoded(pattern(96, 96), "PNG"))
    return path


def _passes(result: subprocess.CompletedProcess) -> int:
    assert result.returncode == 0, result.stderr
    return int(re.search(r"(\d+) transformer passes", result.stderr).group(1))


def test_the_cache_threshold_from_the_environment_switches_step_caching_off_and_its_flag_wins(photo, tmp_path):
    args = ["edit", str(photo), "-p", "x", "--model", "tiny", "--steps", "4", "--acceleration", "regular"]
    assert _passes(fluxedit(*args, cwd=tmp_path)) == 3  # regular caches one of 4 steps
    assert _passes(fluxedit(*args, cwd=tmp_path, FLUXEDIT_CACHE_THRESHOLD="0")) == 4
    overridden = fluxedit(*args, "--cache-threshold", "0.05", cwd=tmp_path, FLUXEDIT_CACHE_THRESHOLD="0")
    assert _passes(overridden) == 3


def test_the_safety_model_from_the_environment_checks_the_edit(photo, tmp_path):
    from fluxedit.engine.tiny_safety import write_tiny_safety_model

    flags_everything = write_tiny_safety_model(tmp_path / "strict-classifier", flag_everything=True)
    args = ["edit", str(photo), "-p", "x", "--model", "tiny", "--steps", "1", "--seed", "1"]
    checked = fluxedit(*args, "-o", "checked.png", cwd=tmp_path, FLUXEDIT_SAFETY_MODEL=str(flags_everything))
    assert checked.returncode == 0, checked.stderr
    assert "note: safety checker blacked out 1 of 1 images" in checked.stderr
    assert Image.open(tmp_path / "checked.png").getextrema() == ((0, 0), (0, 0), (0, 0))
    unchecked = fluxedit(*args, "-o", "unchecked.png", "--no-safety-checker", cwd=tmp_path,
                         FLUXEDIT_SAFETY_MODEL=str(flags_everything))  # fmt: skip
    assert unchecked.returncode == 0, unchecked.stderr
    assert "blacked out" not in unchecked.stderr
    assert Image.open(tmp_path / "unchecked.png").getextrema() != ((0, 0), (0, 0), (0, 0))


@pytest.mark.parametrize(
    ("env", "flags", "message"),
    [
        ({"FLUXEDIT_CACHE_MODE": "sometimes"}, [], "--cache-mode (FLUXEDIT_CACHE_MODE): String should match pattern"),
        ({}, ["--memory", "everywhere"], "--memory (FLUXEDIT_MEMORY): String should match pattern"),
        ({"FLUXEDIT_CACHE_THRESHOLD": "-1"}, [], "--cache-threshold (FLUXEDIT_CACHE_THRESHOLD): Input should be"),
    ],
)
def test_a_bad_engine_option_is_refused_naming_its_flag_and_variable(photo, tmp_path, env, flags, message):
    for command in (["edit", str(photo), "-p", "x"], ["serve"]):
        result = fluxedit(*command, "--model", "tiny", *flags, cwd=tmp_path, **env)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr
