"""edit_image with a mask (data URI, file id, or a local file over stdio), strength and output_resolution, through
the MCP SDK's own clients against a real keyed server (tiny model)."""

from __future__ import annotations

import base64
import io

import anyio
import httpx
import numpy as np
from PIL import Image

from fluxedit.imaging.composite import feather_width
from tests.helpers import encoded, pattern
from tests.mcp.helpers import http_session, images, stdio_session, texts

WIDTH, HEIGHT = 96, 64
PHOTO = encoded(pattern(WIDTH, HEIGHT, seed=8), "PNG")
CORNER = (0, 0, 32, 32)  # the part that may change


def _mask_png(size=(WIDTH, HEIGHT), box=CORNER) -> bytes:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return encoded(mask, "PNG")


def _data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _kept_outside_the_corner(picture: Image.Image) -> bool:
    """Every pixel farther than the feather from the mask's corner is the input's, and the corner was edited."""
    reach = CORNER[2] + feather_width(WIDTH, HEIGHT)
    pixels = np.asarray(picture.convert("RGB"))
    source = np.asarray(Image.open(io.BytesIO(PHOTO)).convert("RGB"))
    kept = np.array_equal(pixels[:, reach:], source[:, reach:]) and np.array_equal(pixels[reach:], source[reach:])
    return kept and not np.array_equal(pixels[:32, :32], source[:32, :32])


def _prediction(keyed, prediction_id: str) -> dict:
    with httpx.Client(base_url=keyed.server.url, headers={"Authorization": f"Bearer {keyed.key}"}) as http:
        return http.get(f"/v1/prediction/{prediction_id}").json()


def _upload(keyed, data: bytes) -> str:
    with httpx.Client(base_url=keyed.server.url, headers={"Authorization": f"Bearer {keyed.key}"}) as http:
        response = http.post("/v1/files", files={"file": ("mask.png", data)})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_a_masked_full_resolution_edit_over_http_keeps_every_other_pixel(keyed):
    mask_id = _upload(keyed, _mask_png())
    common = {"image": _data_uri(PHOTO), "prompt": "a red square", "num_inference_steps": 2, "seed": 4,
              "output_format": "png", "output_resolution": "input"}  # fmt: skip

    async def scenario():
        async with http_session(keyed.server.url + "/mcp", keyed.key) as client:
            listed = await client.list_tools()
            by_uri = await client.call_tool("edit_image", {**common, "mask": _data_uri(_mask_png()), "strength": 0.9})
            by_id = await client.call_tool("edit_image", {**common, "mask": mask_id})
            return listed, by_uri, by_id

    listed, by_uri, by_id = anyio.run(scenario)
    schema = {tool.name: tool for tool in listed.tools}["edit_image"].input_schema["properties"]
    assert schema["strength"]["minimum"] == 0 and schema["strength"]["maximum"] == 1  # the server's limits, shown
    assert schema["output_resolution"]["enum"] == ["model", "input"]
    for result in (by_uri, by_id):
        assert not result.is_error, texts(result)
        (picture,) = images(result)
        assert (
            picture.size == (WIDTH, HEIGHT) == (result.structured_content["width"], result.structured_content["height"])
        )
        assert _kept_outside_the_corner(picture)
    sent = _prediction(keyed, by_uri.structured_content["prediction_id"])["input"]
    assert sent["mask_url"].endswith("/content") and sent["strength"] == 0.9  # the data URI, kept as a file
    assert sent["output_resolution"] == "input"
    assert _prediction(keyed, by_id.structured_content["prediction_id"])["input"]["mask_url"] == mask_id


def test_a_local_mask_file_over_stdio_and_a_wrong_sized_one_refused(keyed, mcp_command, tmp_path):
    photo, mask, small = tmp_path / "photo.png", tmp_path / "mask.png", tmp_path / "small.png"
    photo.write_bytes(PHOTO)
    mask.write_bytes(_mask_png())
    small.write_bytes(_mask_png((48, 32), (0, 0, 8, 8)))
    common = {"image": str(photo), "prompt": "a red square", "num_inference_steps": 2, "seed": 4}

    async def scenario():
        async with stdio_session(mcp_command[0], keyed.server.url, keyed.key, tmp_path / "mcp.log") as client:
            masked = await client.call_tool("edit_image", {**common, "mask": str(mask), "output_resolution": "input"})
            wrong = await client.call_tool("edit_image", {**common, "mask": str(small)})
            missing = await client.call_tool("edit_image", {**common, "mask": str(tmp_path / "nope.png")})
            return masked, wrong, missing

    masked, wrong, missing = anyio.run(scenario)
    assert not masked.is_error, texts(masked)
    (picture,) = images(masked)
    assert picture.size == (WIDTH, HEIGHT) and _kept_outside_the_corner(picture)
    assert wrong.is_error and "input.mask_url: is 48x32 but the image to edit" in texts(wrong)
    assert missing.is_error and "mask" in texts(missing) and "no such file" in texts(missing)
