"""create_batch and batch_status through `fluxedit mcp` (stdio): local images with their own prompts, a local zip,
and arguments an assistant gets wrong, answered as readable tool errors."""

from __future__ import annotations

import io
import time
import zipfile

import anyio

from tests.mcp.helpers import photo_png, stdio_session, texts


def test_a_batch_of_local_images_runs_and_its_status_lists_the_outputs(keyed, mcp_command, tmp_path):
    first, second = tmp_path / "red.png", tmp_path / "wide.png"
    first.write_bytes(photo_png())
    second.write_bytes(photo_png(128, 64))

    async def scenario():
        async with stdio_session(mcp_command[0], keyed.server.url, keyed.key, tmp_path / "mcp.log") as client:
            listed = await client.list_tools()
            created = await client.call_tool("create_batch", {
                "prompt": "make it blue", "images": [str(first), str(second)], "prompts": [None, "make it green"],
                "num_inference_steps": 1, "seed": 3,
            })  # fmt: skip
            assert not created.is_error, texts(created)
            batch = created.structured_content
            deadline = time.monotonic() + 120
            while batch["completed_at"] is None and time.monotonic() < deadline:
                await anyio.sleep(0.5)
                batch = (await client.call_tool("batch_status", {"batch_id": batch["id"]})).structured_content
            with_items = await client.call_tool("batch_status", {"batch_id": batch["id"], "include_items": True})
            return listed, created, batch, with_items

    listed, created, ended, with_items = anyio.run(scenario)
    tools = {tool.name: tool for tool in listed.tools}
    assert {"create_batch", "batch_status"} <= tools.keys()
    assert tools["create_batch"].input_schema["required"] == ["prompt"]
    assert tools["create_batch"].input_schema["properties"]["num_inference_steps"]["maximum"] == 50
    assert created.structured_content["total"] == 2
    assert ended["status"] == "success" and ended["counts"]["success"] == 2, ended
    items = with_items.structured_content["items"]
    assert [item["name"] for item in items] == ["red.png", "wide.png"]
    assert all(item["status"] == "success" and item["output"] for item in items)
    with keyed.server.client(keyed.key) as http:
        prompts = [http.get(f"/v1/prediction/{item['prediction_id']}").json()["input"]["prompt"] for item in items]
    assert prompts == ["make it blue", "make it green"]


def test_a_local_zip_batch_and_readable_errors(keyed, mcp_command, tmp_path):
    archive = tmp_path / "photos.zip"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        zipped.writestr("a.png", photo_png())
        zipped.writestr("notes.txt", "not an image")
    archive.write_bytes(buffer.getvalue())

    async def scenario():
        async with stdio_session(mcp_command[0], keyed.server.url, keyed.key, tmp_path / "mcp.log") as client:
            from_zip = await client.call_tool("create_batch", {"prompt": "x", "zip_file": str(archive),
                                                               "num_inference_steps": 2})  # fmt: skip
            mismatch = await client.call_tool("create_batch", {"prompt": "x", "images": [str(archive)], "prompts": []})
            missing = await client.call_tool("create_batch", {"prompt": "x", "images": [str(tmp_path / "a.png")]})
            bad_steps = await client.call_tool("create_batch", {"prompt": "x", "zip_file": str(archive),
                                                                "num_inference_steps": 500})  # fmt: skip
            unknown = await client.call_tool("batch_status", {"batch_id": "batch_nothing"})
            return from_zip, mismatch, missing, bad_steps, unknown

    from_zip, mismatch, missing, bad_steps, unknown = anyio.run(scenario)
    assert not from_zip.is_error, texts(from_zip)
    assert from_zip.structured_content["total"] == 1
    with keyed.server.client(keyed.key) as http:  # it need not run
        http.post(f"/v1/batches/{from_zip.structured_content['id']}/cancel")
    assert from_zip.structured_content["skipped"] == [{"name": "notes.txt", "reason": "not a JPEG, PNG or WebP image"}]
    assert mismatch.is_error and "prompts" in texts(mismatch) and "one per image" in texts(mismatch)
    assert missing.is_error and "no such file" in texts(missing)
    assert bad_steps.is_error and "input.num_inference_steps" in texts(bad_steps)
    assert unknown.is_error and "404" in texts(unknown)
