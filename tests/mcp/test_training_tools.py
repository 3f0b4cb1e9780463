"""start_training, training_status and list_loras through `fluxedit mcp` (stdio): a local zip, a tiny training."""

from __future__ import annotations

import anyio

from tests.mcp.helpers import stdio_session, texts
from tests.service.test_trainings_api import pairs_zip


def test_train_from_a_local_zip_and_find_the_lora(keyed, mcp_command, tmp_path):
    archive = tmp_path / "pairs.zip"
    archive.write_bytes(pairs_zip(2))
    options = {"data": str(archive), "name": "mcp-style", "steps": 2, "resolution": 128, "rank": 4,
               "default_caption": "invert the colours"}  # fmt: skip

    async def scenario():
        async with stdio_session(mcp_command[0], keyed.server.url, keyed.key, tmp_path / "mcp.log") as client:
            refused = await client.call_tool("start_training", {**options, "steps": 0})
            started = await client.call_tool("start_training", options)
            training = started.structured_content
            while not started.is_error and training["status"] not in ("success", "error", "cancelled"):
                status = await client.call_tool("training_status", {"training_id": training["id"], "wait_s": 30})
                assert not status.is_error, texts(status)
                training = status.structured_content
            loras = await client.call_tool("list_loras", {})
            return refused, started, training, loras

    refused, started, training, loras = anyio.run(scenario)
    assert refused.is_error and "input.steps" in texts(refused)  # the server's message, naming the field
    assert not started.is_error, texts(started)
    assert training["status"] == "success", training
    assert training["lora"]["name"] == "mcp-style"
    assert "mcp-style" in [lora["name"] for lora in loras.structured_content["data"]]
