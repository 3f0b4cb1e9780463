"""The `fluxedit` command."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .config import Settings
from .imaging.decode import DecodedImage, decode_image
from .resolution import RESOLUTION_MODES
from .schema import FluxeditError, InputError, OutputFormat, validated_settings

app = typer.Typer(help="fluxedit: edit images with FLUX.1 Kontext [dev] on your own machine.", no_args_is_help=True)
console = Console(stderr=True, soft_wrap=True)  # long paths stay on one line

# The flag a user typed for each input field, so errors name what they can change.
FLAG_FOR_FIELD = {
    "prompt": "--prompt",
    "num_inference_steps": "--steps",
    "guidance_scale": "--guidance",
    "seed": "--seed",
    "num_images": "--num-images",
    "output_format": "--format",
    "output_quality": "--quality",
    "resolution_mode": "--resolution-mode",
}

ModelOption = Annotated[
    str | None,
    typer.Option(
        help='Hub repo id, diffusers folder, BFL single-file .safetensors, or "tiny" (random weights, '
        "images are noise). [env: FLUXEDIT_MODEL]",
        show_default=False,
    ),
]
ComponentsOption = Annotated[
    str | None,
    typer.Option(help="With a single-file --model: where the text encoders and VAE come from.", show_default=False),
]
DeviceOption = Annotated[str | None, typer.Option(help="auto, cuda, cuda:N, mps or cpu.", show_default=False)]
DtypeOption = Annotated[str | None, typer.Option(help="auto, bfloat16, float16 or float32.", show_default=False)]
MemoryOption = Annotated[
    str | None,
    typer.Option(help="auto, gpu, model-offload, group-offload or sequential-offload.", show_default=False),
]


def fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def _engine_settings(**overrides) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def _read_inputs(paths: list[Path]) -> list[DecodedImage]:
    decoded = []
    for index, path in enumerate(paths):
        field = "image" if index == 0 else f"reference image {index}"
        if not path.is_file():
            raise InputError(f"{field} {path}", "no such file")
        decoded.append(decode_image(path.read_bytes(), field=f"{field} {path}"))
    return decoded


def _output_paths(output: Path | None, first_input: Path, fmt: OutputFormat, count: int) -> list[Path]:
    extension = ".jpg" if fmt is OutputFormat.jpeg else f".{fmt.value}"
    if output is None:
        output = first_input.with_name(f"{first_input.stem}-edited{extension}")
    elif not output.suffix:
        output = output.with_suffix(extension)
    if count == 1:
        return [output]
    return [output.with_name(f"{output.stem}-{k + 1}{output.suffix}") for k in range(count)]


def _format_from(output: Path | None, fmt: str | None) -> OutputFormat | None:
    if fmt is not None:
        return OutputFormat.parse(fmt)
    if output is not None and output.suffix:
        try:
            return OutputFormat.parse(output.suffix)
        except InputError:
            raise InputError("-o", f"{output.suffix} is not a format fluxedit writes (jpg, png or webp)") from None
    return None


def _flag_message(error: InputError) -> str:
    flag = FLAG_FOR_FIELD.get(error.field)
    return f"{flag} ({error.field}): {error.problem}" if flag else str(error)


@app.command()
def edit(
    inputs: Annotated[list[Path], typer.Argument(help="The image to edit, then up to 3 reference images.")],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="The edit instruction.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Output file; its extension sets the format.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (random when absent; always printed).")] = None,
    steps: Annotated[int, typer.Option(help="Denoising steps, 1-50.")] = 28,
    guidance: Annotated[float, typer.Option(help="Guidance strength.")] = 2.5,
    num_images: Annotated[int, typer.Option(help="Images to make in one batch, 1-4.")] = 1,
    fmt: Annotated[
        str | None, typer.Option("--format", help="jpeg, png or webp; default: -o's extension, else the input's.")
    ] = None,
    quality: Annotated[int, typer.Option(help="JPEG/WebP quality, 1-100.")] = 90,
    resolution_mode: Annotated[str, typer.Option(help=f"Output size: {', '.join(RESOLUTION_MODES)}.")] = "match_input",
    metadata: Annotated[bool, typer.Option(help="Embed prompt, seed and settings in the file.")] = True,
    model: ModelOption = None,
    components: ComponentsOption = None,
    device: DeviceOption = None,
    dtype: DtypeOption = None,
    memory: MemoryOption = None,
) -> None:
    """Edit an image with an instruction and write the result."""
    try:
        settings = validated_settings(
            prompt=prompt,
            num_inference_steps=steps,
            guidance_scale=guidance,
            seed=seed,
            num_images=num_images,
            output_format=_format_from(output, fmt),
            output_quality=quality,
            resolution_mode=resolution_mode,
            write_metadata=metadata,
        )
        images = _read_inputs(inputs)
    except InputError as error:
        raise fail(_flag_message(error)) from None
    if len(images) > 4:
        raise fail(f"at most 3 reference images besides the main one (got {len(images) - 1})")

    config = _engine_settings(model=model, components=components, device=device, dtype=dtype, memory=memory)
    result = _run_edit(config, settings, images)
    paths = _output_paths(output, inputs[0], result.format, len(result.images))
    for path, data in zip(paths, result.images, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        console.print(f"wrote [bold]{path}[/] ({result.width}x{result.height}, {len(data):,} bytes)", highlight=False)
    seconds = result.timings["generate"] + result.timings["encode"]
    console.print(f"seed {result.seed}, {settings.num_inference_steps} steps, {seconds:.1f} s", highlight=False)


def _run_edit(config: Settings, settings, images):
    from .engine import EditRequest, Engine  # torch loads only when an edit runs

    try:
        with console.status(f"loading {config.model} ..."):
            started = time.perf_counter()
            engine = Engine.load(**config.engine_options())
        placement = engine.model.placement
        memory = f", {placement.memory_mode}" if placement.device.type == "cuda" else ""
        dtype_name = str(placement.dtype).removeprefix("torch.")
        console.print(
            f"model {config.model} on {placement.device} ({dtype_name}{memory}) "
            f"loaded in {time.perf_counter() - started:.1f} s",
            highlight=False,
        )
        with _progress_bar() as bar:
            task = bar.add_task("editing", total=settings.num_inference_steps)
            return engine.edit(EditRequest(settings, images), progress=lambda p: bar.update(task, completed=p.step))
    except InputError as error:
        raise fail(_flag_message(error)) from None
    except (FluxeditError, ValueError) as error:
        raise fail(str(error), code=1) from None


def _progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("steps"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


@app.command("tiny")
def write_tiny(
    folder: Annotated[Path, typer.Argument(help="Folder to write the diffusers-layout tiny model into.")],
    bfl_file: Annotated[
        Path | None, typer.Option("--bfl-file", help="Also write its transformer as a BFL single-file checkpoint.")
    ] = None,
) -> None:
    """Write the tiny random-weight model (for tests and trying the stack; its images are noise)."""
    from .engine.tiny import write_tiny_model

    write_tiny_model(folder)
    console.print(f"wrote the tiny model to [bold]{folder}[/]", highlight=False)
    if bfl_file is not None:
        from .engine.tiny import write_tiny_bfl_checkpoint

        write_tiny_bfl_checkpoint(bfl_file)
        console.print(f"wrote its transformer in BFL layout to [bold]{bfl_file}[/]", highlight=False)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
