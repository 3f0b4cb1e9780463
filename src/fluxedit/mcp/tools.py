"""The MCP tools: edit_image, get_prediction, list_loras, start_training, training_status (and the batch tools,
create_batch and batch_status, from batch_tools.py).

Each is a thin call through the Python client to the fluxedit server; the parameters' JSON Schema shows the
server's limits (schemas.py) and the server checks them. Failures come back as tool errors whose text names
what to change (failures.py).
"""

# No `from __future__ import annotations`: the tools' annotations use this module's closures and the SDK
# evaluates them to build the JSON Schemas.
import base64
import inspect
from collections.abc import Callable
from contextlib import suppress
from typing import Annotated, Any

import anyio
import anyio.from_thread
import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, ImageContent, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from .. import __version__
from ..client import EditedImage
from ..schema import EditInput
from ..training_options import TrainingInput
from .arguments import edit_options, image_argument, zip_argument
from .batch_tools import register_batch_tools
from .connection import Connection
from .edits import run_edit
from .failures import readable_failures
from .schemas import server_limited
from .server_client import ServerClient

INSTRUCTIONS = """fluxedit edits images with FLUX.1 Kontext [dev] on a self-hosted server.
Call edit_image with an image and an instruction ("make the jacket red", "put the product on a white
background"); it returns the edited image(s), their URLs and the seed. An output URL is a valid image for the
next edit, so edits can be chained. A mask (white where it may change) limits the edit to part of the image,
and output_resolution input returns it at the image's own size with every other pixel kept. Use list_loras
for the LoRA adapters available by name, start_training to train a new one from before/after pairs, and
training_status to follow it. For the same edit over many images (a product catalogue), call create_batch
once and follow it with batch_status."""

LOSSES_SHOWN = 20  # a training's loss curve can hold 100,000 numbers: the assistant sees the latest


class LoraArgument(BaseModel):
    path: str = Field(
        description="A LoRA registered on the server (see list_loras), an https URL of a .safetensors file, "
        "or a Hugging Face owner/repo[/file.safetensors]."
    )
    scale: float = Field(1.0, description="How strongly it applies, -4 to 4; 0 is the base model.")


class EditResult(BaseModel):
    prediction_id: str
    status: str
    seed: int | None = Field(description="The seed used: pass it back with the same inputs to repeat the edit.")
    width: int | None
    height: int | None
    output_urls: list[str] = Field(description="The outputs' addresses (no key needed); each is a valid image.")
    cost: float | None = Field(description="What the edit cost, in USD.")


def build_server(connection: Connection) -> MCPServer:
    server = MCPServer("fluxedit", title="fluxedit", instructions=INSTRUCTIONS, version=__version__,
                       log_level="WARNING")  # fmt: skip
    _register(server, connection)
    return server


IMAGE_FORMS = (
    "an http(s) URL, a data: URI, the base64 of the image's bytes, an output URL of an earlier edit, or a file id "
    "of the server (file_...)"
)


def _register(server: MCPServer, connection: Connection) -> None:
    local = connection.local_files
    image_forms = IMAGE_FORMS + (", or the path of a local image file" if local else "")
    edit_field = lambda name, text: server_limited(EditInput, name, text)  # noqa: E731
    training_field = lambda name, text: server_limited(TrainingInput, name, text)  # noqa: E731

    @_tool(
        server,
        title="Edit an image",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False),
    )
    async def edit_image(
        image: Annotated[str, Field(description=f"The image to edit: {image_forms}. JPEG, PNG or WebP.")],
        prompt: Annotated[str, Field(description="The edit instruction, e.g. 'make the sky a sunset'.")],
        ctx: Context,
        references: Annotated[
            list[str] | None, Field(description=f"Up to 3 more reference images (same forms: {image_forms}).")
        ] = None,
        seed: Annotated[int | None, edit_field("seed", "Random seed; random when left out.")] = None,
        num_inference_steps: Annotated[int | None, edit_field("num_inference_steps", "Denoising steps.")] = None,
        guidance_scale: Annotated[float | None, edit_field("guidance_scale", "Guidance strength.")] = None,
        num_images: Annotated[int | None, edit_field("num_images", "How many variants to make.")] = None,
        output_format: Annotated[
            str | None, edit_field("output_format", "Output file format; the input image's format when left out.")
        ] = None,
        resolution_mode: Annotated[
            str | None,
            edit_field(
                "resolution_mode",
                "Output size: match_input (nearest Kontext size), auto (input aspect at ~1 MP) or an aspect ratio W:H.",
            ),
        ] = None,
        acceleration: Annotated[
            str | None,
            edit_field("acceleration", "none (every step in full), regular (step caching), high (more caching)."),
        ] = None,
        loras: Annotated[
            list[LoraArgument] | None, Field(description="Up to 4 LoRA adapters, each {path, scale}.")
        ] = None,
        mask: Annotated[
            str | None,
            Field(
                description=f"Edit only part of the image: a mask of exactly the image's size, white (or opaque "
                f"where it has transparency) where the edit may change the picture, black (or transparent) where "
                f"it is kept ({image_forms}). Left out: the whole image may change."
            ),
        ] = None,
        strength: Annotated[
            float | None,
            edit_field("strength", "With a mask: how far the masked part may move from the input (1: all the way)."),
        ] = None,
        output_resolution: Annotated[
            str | None,
            edit_field(
                "output_resolution",
                "model (the model's ~1 MP size) or input (the input's own size, up to 40 MP: the edited region is "
                "laid onto the original and every other pixel is kept).",
            ),
        ] = None,
    ) -> Annotated[CallToolResult, EditResult]:
        """Edit an image with an instruction (FLUX.1 Kontext) and return the edited image(s), with each output's
        URL, the seed and the prediction id. With a mask only the masked part changes; with output_resolution
        input the result comes back at the input's own size. Takes about a second per step on a small GPU;
        progress is reported per denoising step. A bad value is refused with the server's message naming the
        field and its limit."""
        options = edit_options(
            loras, seed=seed, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
            num_images=num_images, output_format=output_format, resolution_mode=resolution_mode,
            acceleration=acceleration, strength=strength, output_resolution=output_resolution,
        )  # fmt: skip
        with connection.client(ctx) as client, readable_failures(client.base_url, connection.hint):
            main = image_argument(image, "image", local)
            refs = [image_argument(ref, f"references[{i}]", local) for i, ref in enumerate(references or [])]
            if mask is not None:
                options["mask"] = image_argument(mask, "mask", local)  # sent as input.mask_url
            prediction, images = await _edit_reporting_steps(ctx, client, main, prompt, refs, options)
        return _edit_result(prediction, images)

    @_tool(server, title="Get a prediction", annotations=ToolAnnotations(read_only_hint=True))
    async def get_prediction(
        prediction_id: Annotated[str, Field(description="The id edit_image returned.")],
        ctx: Context,
        wait_s: Annotated[
            float, Field(description="Hold the answer until the prediction ends, at most this many seconds (0-60).")
        ] = 0,
    ) -> dict[str, Any]:
        """A prediction as the server shows it: status (created, starting, processing, success, error,
        cancelled), input, output URLs (or error_code and error_message), seed, size, logs and metrics (cost)."""
        with connection.client(ctx) as client, readable_failures(client.base_url, connection.hint):
            return await anyio.to_thread.run_sync(lambda: client.get(prediction_id, wait=wait_s))

    @_tool(server, title="List LoRAs", annotations=ToolAnnotations(read_only_hint=True))
    async def list_loras(ctx: Context) -> dict[str, Any]:
        """The LoRA adapters registered on the server for this key (uploaded, or made by start_training): each
        name can be given to edit_image as loras=[{"path": NAME, "scale": 1.0}]."""
        with connection.client(ctx) as client, readable_failures(client.base_url, connection.hint):
            return await anyio.to_thread.run_sync(client.loras)

    data_forms = "an http(s) URL of a .zip" + (", or the path of a local .zip file" if local else "")

    @_tool(
        server,
        title="Train a LoRA",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False),
    )
    async def start_training(
        data: Annotated[
            str,
            Field(
                description=f"The training pairs: {data_forms}. Inside: NAME_start.jpg / NAME_end.jpg pairs "
                "(JPEG, PNG or WebP) with an optional NAME.txt caption each; at least 2 pairs."
            ),
        ],
        ctx: Context,
        name: Annotated[
            str | None, Field(description="The name the LoRA is registered under (default: training-<id>).")
        ] = None,
        steps: Annotated[int | None, training_field("steps", "Training steps.")] = None,
        learning_rate: Annotated[float | None, training_field("learning_rate", "AdamW learning rate.")] = None,
        rank: Annotated[int | None, training_field("rank", "LoRA rank.")] = None,
        alpha: Annotated[float | None, training_field("alpha", "LoRA alpha (default: the rank).")] = None,
        targets: Annotated[
            str | None, training_field("targets", "attention, or all (attention, MLPs and projections).")
        ] = None,
        resolution: Annotated[int | None, training_field("resolution", "Bucket side in pixels.")] = None,
        default_caption: Annotated[
            str | None, training_field("default_caption", "Caption for pairs without a NAME.txt.")
        ] = None,
        trigger_word: Annotated[str | None, training_field("trigger_word", "Put before every caption.")] = None,
        caption_dropout: Annotated[
            float | None, training_field("caption_dropout", "Share of steps trained with an empty caption.")
        ] = None,
        seed: Annotated[int | None, training_field("seed", "Same seed, same weights.")] = None,
    ) -> dict[str, Any]:
        """Start training a LoRA from before/after image pairs; returns the training (its id, status and
        progress). It runs in the background: follow it with training_status. When it succeeds the LoRA is
        registered under `name` and edit_image can use it."""
        options = {
            "name": name, "steps": steps, "learning_rate": learning_rate, "rank": rank, "alpha": alpha,
            "targets": targets, "resolution": resolution, "default_caption": default_caption,
            "trigger_word": trigger_word, "caption_dropout": caption_dropout, "seed": seed,
        }  # fmt: skip
        options = {key: value for key, value in options.items() if value is not None}
        with connection.client(ctx) as client, readable_failures(client.base_url, connection.hint):
            source = zip_argument(data, "data", local)
            training = await anyio.to_thread.run_sync(lambda: client.start_training(source, options))
        return _trimmed(training)

    @_tool(server, title="Training status", annotations=ToolAnnotations(read_only_hint=True))
    async def training_status(
        training_id: Annotated[str, Field(description="The id start_training returned.")],
        ctx: Context,
        wait_s: Annotated[
            float, Field(description="Hold the answer until the training ends, at most this many seconds (0-60).")
        ] = 0,
    ) -> dict[str, Any]:
        """A training: status, progress (step of total), the latest loss values, logs, and once it succeeded
        the LoRA's name (usable in edit_image's loras) and download URLs."""
        with connection.client(ctx) as client, readable_failures(client.base_url, connection.hint):
            return _trimmed(await anyio.to_thread.run_sync(lambda: client.training(training_id, wait=wait_s)))

    register_batch_tools(server, connection, _tool, image_forms)


def _tool(server: MCPServer, **options: Any) -> Callable[[Callable], Callable]:
    """server.tool, with the docstring's indentation taken out of the description the assistant reads."""

    def register(function: Callable) -> Callable:
        server.add_tool(function, description=inspect.cleandoc(function.__doc__ or ""), **options)
        return function

    return register


async def _edit_reporting_steps(
    ctx: Context, client: ServerClient, image: Any, prompt: str, references: list[Any], options: dict[str, Any]
) -> tuple[dict, list[EditedImage]]:
    """run_edit in a thread, each new step sent as an MCP progress notification; a call the client gives up on
    (cancelled) cancels its prediction on the server."""
    created: list[str] = []
    reported = 0

    def report(step: int, total: int) -> None:
        nonlocal reported
        if step <= reported:  # progress must increase
            return
        reported = step
        with suppress(Exception):  # a lost notification is no reason to lose the edit
            anyio.from_thread.run(ctx.report_progress, step, total, f"denoising step {step} of {total}")

    def edit() -> tuple[dict, list[EditedImage]]:
        return run_edit(client, image, prompt, references, options, created.append, report)

    try:
        return await anyio.to_thread.run_sync(edit, abandon_on_cancel=True)
    except anyio.get_cancelled_exc_class():
        if created:
            with anyio.CancelScope(shield=True), suppress(Exception):
                await anyio.to_thread.run_sync(client.cancel, created[0])
        raise


def _edit_result(prediction: dict, images: list[EditedImage]) -> CallToolResult:
    result = EditResult(
        prediction_id=prediction["id"],
        status=prediction["status"],
        seed=prediction.get("seed"),
        width=prediction.get("width"),
        height=prediction.get("height"),
        output_urls=[image.url for image in images],
        cost=(prediction.get("metrics") or {}).get("cost"),
    )
    summary = (
        f"Edited: {len(images)} image(s) of {result.width}x{result.height}, seed {result.seed}, "
        f"prediction {result.prediction_id}, cost {result.cost} USD.\nOutput URLs (each usable as the next "
        "edit's image):\n" + "\n".join(result.output_urls)
    )
    content: list[Any] = [
        ImageContent(type="image", data=base64.b64encode(image.data).decode(), mime_type=image.content_type)
        for image in images
    ]
    content.append(TextContent(type="text", text=summary))
    return CallToolResult(content=content, structured_content=result.model_dump(mode="json"))


def _trimmed(training: dict) -> dict:
    losses = training.get("losses")
    if isinstance(losses, list) and len(losses) > LOSSES_SHOWN:
        training = {**training, "losses": losses[-LOSSES_SHOWN:], "losses_shown": f"the last {LOSSES_SHOWN}"}
    return training
