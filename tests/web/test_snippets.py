"""The API & SDK panel shows code for exactly the current form, and that code repeats the edit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from fluxedit.imaging.encode import read_metadata
from tests.web.conftest import open_playground
from tests.web.steps import choose_file, expect, open_settings, set_steps


def test_the_python_snippet_makes_the_same_edit(page, server, photo, tmp_path):
    open_playground(page, server)
    choose_file(page, photo)
    page.fill("#prompt", 'Write "HELLO" on the lake')
    set_steps(page, 2)
    page.fill("#set-seed", "99")
    page.click("label[for=set-num_images-2]")
    page.select_option("#set-output_format", "webp")
    expect(page.locator("#run-price")).to_have_text("$0.05")

    python = page.text_content("#code-python")
    assert "client.edit(" in python and '"lake.png",' in python and '"Write \\"HELLO\\" on the lake",' in python
    assert "num_inference_steps=2," in python and "seed=99," in python and "num_images=2," in python
    assert 'output_format="webp",' in python
    shutil.copy(photo, tmp_path / "lake.png")
    env = {key: value for key, value in os.environ.items() if key != "FLUXEDIT_API_KEY"}
    done = subprocess.run([sys.executable, "-c", python], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    saved = sorted(tmp_path.glob("*.webp"))
    assert len(saved) == 2
    assert sorted(read_metadata(path.read_bytes())["seed"] for path in saved) == [99, 100]


def test_the_curl_snippet_follows_the_form(page, server, photo, tmp_path):
    open_playground(page, server)
    page.click("#tab-python")
    expect(page.locator("#snippet-python")).to_be_visible()
    page.keyboard.press("ArrowLeft")  # tabs work with the arrow keys
    expect(page.locator("#snippet-curl")).to_be_visible()
    choose_file(page, photo)
    page.fill("#prompt", "Paint it in $5 `style`")
    set_steps(page, 3)
    open_settings(page)
    page.select_option("#set-resolution_mode", "1:1")
    curl = page.text_content("#code-curl")
    assert f"FILE=$(curl -s {server.url}/v1/files -F file=@lake.png | jq -r .id)" in curl
    assert '"image_url": "$FILE"' in curl and '"num_inference_steps": 3' in curl and '"resolution_mode": "1:1"' in curl
    assert '"prompt": "Paint it in \\$5 \\`style\\`"' in curl  # escaped for the unquoted here-document
    assert "guidance_scale" not in curl  # defaults are left to the server
    missing = [tool for tool in ("curl", "jq", "bash") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"the snippet's text was checked; running it needs {' and '.join(missing)}, missing here")
    shutil.copy(photo, tmp_path / "lake.png")
    done = subprocess.run(["bash", "-c", curl], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "/outputs/" in done.stdout
