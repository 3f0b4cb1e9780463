"""`fluxedit mcp` over stdio, driven by the MCP SDK's own client, against a real keyed server (tiny model)."""

from __future__ import annotations

import anyio
import httpx
import pytest

from tests.mcp.helpers import EDIT_TOOLS, free_port, images, photo_png, stdio_session, texts

FAST = {"num_inference_steps": 2, "seed": 11}


def test_fluxedit_has_the_mcp_command(mcp_command):
    _command, wired = mcp_command
    assert wired, (
        "`fluxedit mcp` is not a command yet: src/fluxedit/cli.py must register it, "
        '`app.command("mcp")(mcp_command)` with `from .mcp.cli import mcp_command` (typer only, so --help stays '
        "fast); these tests ran `python -m fluxedit.mcp` meanwhile"
    )


def test_lists_tools_and_edits_a_local_file_with_progress(keyed, mcp_command, tmp_path):
    photo = tmp_path / "photo.png"
    photo.write_bytes(photo_png())
    steps: list[tuple[float, float | None]] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        steps.append((done, total))

    async def scenario():
        async with stdio_session(mcp_command[0], keyed.server.url, keyed.key, tmp_path / "mcp.log") as client:
            listed = await client.list_tools()
            edit = await client.call_tool(
                "edit_image", {"image": str(photo), "prompt": "make it blue", **FAST}, progress_callback=progress
            )
            return listed, edit

    listed, edit = anyio.run(scenario)
    tools = {tool.name: tool for tool in listed.tools}
    assert tools.keys() >= EDIT_TOOLS
    schema = tools["edit_image"].input_schema
    assert schema["required"] == ["image", "prompt"]
    assert schema["properties"]["num_inference_steps"]["maximum"] == 50  # the server's limit, shown
    assert {"mask", "strength", "output_resolution"} <= schema["properties"].keys()
    assert tools["edit_image"].description.startswith("Edit an image")

    assert not edit.is_error, texts(edit)
    structured = edit.structured_content
    with httpx.Client(base_url=keyed.server.url, headers={"Authorization": f"Bearer {keyed.key}"}) as http:
        prediction = http.get(f"/v1/prediction/{structured['prediction_id']}").json()
    assert prediction["status"] == "success"
    (picture,) = images(edit)
    assert picture.size == (prediction["width"], prediction["height"])
    assert picture.format == "PNG"  # the input's format
    assert structured["seed"] == 11 == prediction["seed"]
    assert structured["output_urls"] == prediction["output"]
    assert prediction["output"][0] in texts(edit) and "seed 11" in texts(edit)
    assert steps and steps[-1] == (2, 2)  # progress notifications, step of total


def test_bad_arguments_give_readable_tool_errors(keyed, mcp_command, tmp_path):
    photo = tmp_path / "photo.png"
    photo.write_bytes(photo_png())

    async def scenario():
        async with stdio_session(mcp_command[0], keyed.server.url, keyed.key, tmp_path / "mcp.log") as client:
            too_many = await client.call_tool(
                "edit_image", {"image": str(photo), "prompt": "x", "num_inference_steps": 500}
            )
            missing = await client.call_tool("edit_image", {"image": str(tmp_path / "nope.png"), "prompt": "x"})
            unknown = await client.call_tool("get_prediction", {"prediction_id": "does-not-exist"})
            wrong_type = await client.call_tool("edit_image", {"image": str(photo), "prompt": "x", "seed": "many"})
            still_alive = await client.call_tool("list_loras", {})
            return too_many, missing, unknown, wrong_type, still_alive

    too_many, missing, unknown, wrong_type, still_alive = anyio.run(scenario)
    assert too_many.is_error
    assert "input.num_inference_steps" in texts(too_many) and "50" in texts(too_many)  # the server's own message
    assert "422" in texts(too_many)
    assert missing.is_error and "no such file" in texts(missing) and "nope.png" in texts(missing)
    assert unknown.is_error and "404" in texts(unknown)
    assert wrong_type.is_error and "seed" in texts(wrong_type)
    assert not still_alive.is_error and isinstance(still_alive.structured_content["data"], list)


def test_an_unreachable_server_is_a_tool_error(mcp_command, tmp_path):
    nowhere = f"http://127.0.0.1:{free_port()}"

    async def scenario():
        async with stdio_session(mcp_command[0], nowhere, None, tmp_path / "mcp.log") as client:
            return await client.call_tool("list_loras", {})

    result = anyio.run(scenario)
    assert result.is_error
    assert f"could not reach the fluxedit server at {nowhere}" in texts(result)
    assert "FLUXEDIT_BASE_URL" in texts(result)


@pytest.mark.parametrize("key", [None, "fxe_not-a-key"])
def test_a_missing_or_wrong_key_is_the_servers_401(keyed, mcp_command, tmp_path, key):
    async def scenario():
        async with stdio_session(mcp_command[0], keyed.server.url, key, tmp_path / "mcp.log") as client:
            return await client.call_tool("list_loras", {})

    result = anyio.run(scenario)
    assert result.is_error and "401" in texts(result) and "API key" in texts(result)
