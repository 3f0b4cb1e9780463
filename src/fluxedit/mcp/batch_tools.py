"""The MCP batch tools: create_batch (one instruction over many images) and batch_status.

Built as tools.py builds the others: a thin call through the Python client (client.batch, get_batch,
batch_items), the server's limits in the JSON Schema, failures as readable tool errors.
"""

# No `from __future__ import annotations`: the SDK evaluates the annotations to build the JSON Schemas.
from collections.abc import Callable
from itertools import islice
from typing import Annotated, Any

import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from ..schema import EditInput, InputError
from .arguments import edit_options, image_argument
from .connection import Connection
from .failures import readable_failures
from .schemas import server_limited

SKIPPED_SHOWN = 20  # a zip's skipped members can be thousands: the assistant sees the first
ITEMS_SHOWN = 50


class BatchLora(BaseModel):
    path: str = Field(description="A LoRA registered on the server (see list_loras), a URL or a Hugging Face repo.")
    scale: float = Field(1.0, description="How strongly it applies, -4 to 4.")


def register_batch_tools(server: MCPServer, connection: Connection, tool: Callable, image_forms: str) -> None:
    """`tool`: tools.py's registration (the docstring becomes the description)."""
    local = connection.local_files
    edit_field = lambda name, text: server_limited(EditInput, name, text)  # noqa: E731
    zip_forms = "the path of a local .zip of images" if local else "not available over HTTP (give images instead)"

    @tool(
        server,
        title="Edit many images",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False),
    )
    async def create_batch(
        prompt: Annotated[str, Field(description="The edit instruction for every image, e.g. 'white background'.")],
        ctx: Context,
        images: Annotated[
            list[str] | None, Field(description=f"The images, each one of: {image_forms}. JPEG, PNG or WebP.")
        ] = None,
        prompts: Annotated[
            list[str | None] | None,
            Field(description="Optional per-image prompts, in the order of images (null: the main prompt)."),
        ] = None,
        zip_file: Annotated[
            str | None,
            Field(
                description=f"Instead of images: {zip_forms} (a prompts.csv of name,prompt inside gives "
                "per-image prompts; other files are skipped)."
            ),
        ] = None,
        seed: Annotated[int | None, edit_field("seed", "Random seed for every image; random when left out.")] = None,
        num_inference_steps: Annotated[int | None, edit_field("num_inference_steps", "Denoising steps.")] = None,
        guidance_scale: Annotated[float | None, edit_field("guidance_scale", "Guidance strength.")] = None,
        num_images: Annotated[int | None, edit_field("num_images", "Variants per image.")] = None,
        output_format: Annotated[str | None, edit_field("output_format", "Output file format.")] = None,
        resolution_mode: Annotated[str | None, edit_field("resolution_mode", "Output size.")] = None,
        acceleration: Annotated[str | None, edit_field("acceleration", "none, regular or high.")] = None,
        loras: Annotated[
            list[BatchLora] | None, Field(description="Up to 4 LoRA adapters, each {path, scale}.")
        ] = None,
        webhook_url: Annotated[str | None, Field(description="Called once, when the whole batch ends.")] = None,
    ) -> dict[str, Any]:
        """Start one edit over many images (a batch): each image becomes a prediction on the server, run in
        the background. Returns the batch: its id, status, total, counts by status and progress. Follow it with
        batch_status; its results.zip URL downloads every output with a manifest.csv."""
        options = edit_options(
            loras, seed=seed, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
            num_images=num_images, output_format=output_format, resolution_mode=resolution_mode,
            acceleration=acceleration,
        )  # fmt: skip
        with connection.client(ctx) as client, readable_failures(client.base_url, connection.hint):
            source = _batch_source(images, prompts, zip_file, local)
            batch = await anyio.to_thread.run_sync(
                lambda: client.batch(source, prompt, webhook_url=webhook_url, **options)
            )
        return _trimmed(batch)

    @tool(server, title="Batch status", annotations=ToolAnnotations(read_only_hint=True))
    async def batch_status(
        batch_id: Annotated[str, Field(description="The id create_batch returned.")],
        ctx: Context,
        include_items: Annotated[
            bool, Field(description=f"Also list the first {ITEMS_SHOWN} images: status, output URLs, error, seed.")
        ] = False,
    ) -> dict[str, Any]:
        """A batch: status (processing, then success once every image has ended, or cancelled), counts by
        status, progress (done of total), cost so far, estimated_seconds_left, and its URLs (results.zip)."""
        with connection.client(ctx) as client, readable_failures(client.base_url, connection.hint):

            def read() -> dict[str, Any]:
                batch = _trimmed(client.get_batch(batch_id))
                if include_items:
                    batch["items"] = list(islice(client.batch_items(batch["id"], limit=ITEMS_SHOWN), ITEMS_SHOWN))
                return batch

            return await anyio.to_thread.run_sync(read)


def _batch_source(images: list[str] | None, prompts: list[str | None] | None, zip_file: str | None, local: bool):
    """What client.batch takes: a local zip's path, or the images (each with its own prompt where given)."""
    if zip_file is not None:
        if images:
            raise InputError("zip_file", "give either images or zip_file, not both")
        if not local:
            raise InputError("zip_file", "local files are read only by the local (stdio) server; give images")
        return image_argument(zip_file, "zip_file", local)
    if not images:
        raise InputError("images", "is required: at least one image (or zip_file)")
    if prompts is not None and len(prompts) != len(images):
        raise InputError("prompts", f"has {len(prompts)} prompts for {len(images)} images: give one per image")
    sources = [image_argument(image, f"images[{i}]", local) for i, image in enumerate(images)]
    return [
        source if not (prompts and prompts[i]) else {"image": source, "prompt": prompts[i]}
        for i, source in enumerate(sources)
    ]


def _trimmed(batch: dict) -> dict:
    skipped = batch.get("skipped")
    if isinstance(skipped, list) and len(skipped) > SKIPPED_SHOWN:
        batch = {**batch, "skipped": skipped[:SKIPPED_SHOWN], "skipped_count": len(skipped)}
    return batch
