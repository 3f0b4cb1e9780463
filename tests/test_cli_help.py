"""Every `--help` of the `fluxedit` command works and shows its texts as written, and `--help` starts fast.

The commands are read from the typer app itself, so a command added later is covered without editing this file.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import typer

from fluxedit.cli import app
from tests.test_cli import FLUXEDIT


def _commands(command, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    """(argv, click command) for the app and every command and subcommand under it (typer vendors click)."""
    found = [(path, command)]
    for name, sub in (getattr(command, "commands", None) or {}).items():
        found += _commands(sub, (*path, name))
    return found


COMMANDS = _commands(typer.main.get_command(app))


def _flat(text: str) -> str:
    return re.sub(r"\s+", "", text)  # help is wrapped, at spaces and after hyphens


def test_the_tree_holds_every_command():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"", "edit", "tiny", "train", "serve", "keys", "keys create", "keys list", "keys revoke"} <= names


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) or "fluxedit" for p, _ in COMMANDS])
def test_help_shows_every_text_as_written(path, command):
    result = subprocess.run([FLUXEDIT, *path, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "Error" not in result.stderr
    shown = _flat(result.stdout)
    assert "Usage:" in shown
    # Brackets, "[env: ...]" and "owner/repo[/file]" are text, not markup to interpret or drop.
    texts = [command.help or ""] + [param.help for param in command.params if getattr(param, "help", None)]
    for text in texts:
        assert _flat(text.split("\n\n")[0]) in shown, f"missing or altered in `{' '.join(path)} --help`: {text!r}"


def test_top_level_help_names_the_model_with_its_brackets():
    result = subprocess.run([FLUXEDIT, "--help"], capture_output=True, text=True, timeout=60)
    assert "fluxedit: edit images with FLUX.1 Kontext [dev] on your own machine." in result.stdout


def test_importing_the_cli_loads_no_model_library():
    # --help, keys and serve's parent process need none of them; only an edit or a training imports torch.
    heavy = ["torch", "diffusers", "transformers", "numpy", "PIL", "sqlalchemy", "fastapi"]
    code = f"import sys, fluxedit.cli; print([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"
