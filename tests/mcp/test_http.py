"""MCP over streamable HTTP at /mcp of the API, with the API's keys, driven by the MCP SDK's own client."""

from __future__ import annotations

import anyio
import httpx
import pytest

from tests.mcp.helpers import EDIT_TOOLS, http_session, images, photo_base64, texts


def test_fluxedit_serve_mounts_mcp(keyed):
    assert keyed.serve_mounts_mcp, (
        "`fluxedit serve` answers 404 at /mcp: the app factory (src/fluxedit/api/app.py) must call "
        "`mount_mcp(app, settings)` (from ..mcp.http) before returning the app; these tests used "
        "tests/mcp/mounted_server.py meanwhile"
    )


def test_lists_tools_and_edits_base64_with_the_key(keyed):
    steps: list[float] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        steps.append(done)

    async def scenario():
        async with http_session(keyed.server.url + "/mcp", keyed.key) as client:
            listed = await client.list_tools()
            edit = await client.call_tool(
                "edit_image",
                {"image": photo_base64(), "prompt": "make it green", "num_inference_steps": 1, "output_format": "jpeg"},
                progress_callback=progress,
            )
            fetched = await client.call_tool(
                "get_prediction", {"prediction_id": edit.structured_content["prediction_id"]}
            )
            return listed, edit, fetched

    listed, edit, fetched = anyio.run(scenario)
    tools = {tool.name: tool for tool in listed.tools}
    assert tools.keys() >= EDIT_TOOLS
    assert "local image file" not in tools["edit_image"].input_schema["properties"]["image"]["description"]
    assert not edit.is_error, texts(edit)
    prediction = fetched.structured_content
    assert prediction["status"] == "success"
    (picture,) = images(edit)
    assert picture.format == "JPEG"
    assert picture.size == (prediction["width"], prediction["height"]) == (
        edit.structured_content["width"], edit.structured_content["height"])  # fmt: skip
    assert edit.structured_content["output_urls"] == prediction["output"]
    assert steps == [1]
    with httpx.Client(base_url=keyed.server.url, headers={"Authorization": f"Bearer {keyed.key}"}) as http:
        listing = http.get("/v1/prediction", params={"limit": 100}).json()["data"]
    assert prediction["id"] in [item["id"] for item in listing]  # made with the caller's key


def test_bad_arguments_and_local_paths_give_tool_errors(keyed, tmp_path):
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"not even an image")

    async def scenario():
        async with http_session(keyed.server.url + "/mcp", keyed.key) as client:
            return (
                await client.call_tool("edit_image", {"image": photo_base64(), "prompt": "x", "num_images": 9}),
                await client.call_tool("edit_image", {"image": str(photo), "prompt": "x"}),
                await client.call_tool("start_training", {"data": str(photo)}),
            )

    too_many, path, training_path = anyio.run(scenario)
    assert too_many.is_error and "input.num_images" in texts(too_many) and "4" in texts(too_many)
    assert path.is_error and "only by the local (stdio) server" in texts(path)
    assert training_path.is_error and "http(s) URL" in texts(training_path)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer fxe_wrong"}, {"X-API-Key": "fxe_wrong"}])
def test_without_a_valid_key_mcp_is_refused_like_the_api(keyed, headers):
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}  # fmt: skip
    response = httpx.post(
        keyed.server.url + "/mcp", json=initialize, headers={"Accept": "application/json, text/event-stream", **headers}
    )
    api = httpx.get(keyed.server.url + "/v1/prediction", headers=headers)
    assert response.status_code == 401 == api.status_code
    assert response.json() == api.json()  # the seed's {"error": ...}, word for word
    assert response.headers["www-authenticate"] == "Bearer"


def test_the_x_api_key_header_works_too(keyed):
    async def scenario():
        async with http_session(keyed.server.url + "/mcp", keyed.key, header="X-API-Key") as client:
            return await client.call_tool("list_loras", {})

    result = anyio.run(scenario)
    assert not result.is_error, texts(result)
    assert isinstance(result.structured_content["data"], list)
