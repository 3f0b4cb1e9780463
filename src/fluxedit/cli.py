"""The `fluxedit` command."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from .mcp.cli import mcp_command
from .resolution import RESOLUTION_MODES

# Each command imports what it needs when it runs: `fluxedit --help` or `keys list` never pays for torch,
# diffusers, numpy or pydantic (tests/test_cli_help.py checks it).
if TYPE_CHECKING:
    from .config import Settings
    from .imaging.decode import DecodedImage
    from .schema import InputError, OutputFormat

# rich_markup_mode=None: help texts are plain text, so "[dev]", "[env: ...]" and "owner/repo[/file]" show as written.
app = typer.Typer(
    help="fluxedit: edit images with FLUX.1 Kontext [dev] on your own machine.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
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
    "acceleration": "--acceleration",
    "strength": "--strength",
    "output_resolution": "--output-resolution",
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
    typer.Option(
        help="Needed with a single-file --model: a diffusers folder or hub id of FLUX.1 Kontext [dev] that provides "
        "the text encoders, VAE and configs, or ComfyUI's component files (its models/ folder, or a comma-separated "
        "list: clip_l, t5xxl_fp16 or t5xxl_fp8_e4m3fn(_scaled), ae .safetensors), read offline. "
        "[env: FLUXEDIT_COMPONENTS]",
        show_default=False,
    ),
]
# The engine's options, shared by edit, train and serve: each flag overrides its FLUXEDIT_* variable, and all three
# commands build their engine from the same Settings (Settings.engine_config; docs/engine.md, "Engine options").
DeviceOption = Annotated[
    str | None, typer.Option(help="auto, cuda, cuda:N, mps or cpu. [env: FLUXEDIT_DEVICE]", show_default=False)
]
DtypeOption = Annotated[
    str | None, typer.Option(help="auto, bfloat16, float16 or float32. [env: FLUXEDIT_DTYPE]", show_default=False)
]
MemoryOption = Annotated[
    str | None,
    typer.Option(
        help="auto, gpu, model-offload, group-offload or sequential-offload. [env: FLUXEDIT_MEMORY]", show_default=False
    ),
]
QuantizeOption = Annotated[
    str | None,
    typer.Option(
        help="The transformer's precision, chosen at load: auto (what fits the GPU), none, fp8, int8 or nf4. "
        "[env: FLUXEDIT_QUANTIZE]",
        show_default=False,
    ),
]
TextEncoderQuantizeOption = Annotated[
    str | None,
    typer.Option(
        help="T5-XXL's precision: auto, none, fp8, int8 or nf4. [env: FLUXEDIT_TEXT_ENCODER_QUANTIZE]",
        show_default=False,
    ),
]
TextEncoderDeviceOption = Annotated[
    str | None,
    typer.Option(
        help="auto, or cpu: T5-XXL stays in CPU memory (9.5 GB less GPU memory, slower prompts). "
        "[env: FLUXEDIT_TEXT_ENCODER_DEVICE]",
        show_default=False,
    ),
]
AttentionOption = Annotated[
    str | None,
    typer.Option(
        help="Attention kernel: auto (FlashAttention 3, SageAttention or FlashAttention 2 when installed), "
        "native, _flash_3, sage or flash. [env: FLUXEDIT_ATTENTION]",
        show_default=False,
    ),
]
CacheModeOption = Annotated[
    str | None,
    typer.Option(
        help="Step caching of the regular and high levels: schedule (fixed steps) or adaptive (First-Block-Cache). "
        "[env: FLUXEDIT_CACHE_MODE]",
        show_default=False,
    ),
]
CacheThresholdOption = Annotated[
    float | None,
    typer.Option(
        help="0 switches step caching off (every step in full); unset: each level's own. "
        "[env: FLUXEDIT_CACHE_THRESHOLD]",
        show_default=False,
    ),
]
MaxLorasOption = Annotated[
    int | None,
    typer.Option(
        help="LoRAs kept loaded, for switching without a reload. [env: FLUXEDIT_MAX_LORAS]", show_default=False
    ),
]
SafetyModelOption = Annotated[
    str | None,
    typer.Option(
        help="Image classifier (hub id or folder) that flags NSFW outputs. [env: FLUXEDIT_SAFETY_MODEL]",
        show_default=False,
    ),
]


def fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


def say(message: str) -> None:
    """Print a message to stderr (stdout stays for what scripts read), as written: no Rich markup in it."""
    console.print(message, markup=False, highlight=False)


def _settings(**flags) -> Settings:
    """Settings from the FLUXEDIT_* variables, each overridden by its flag when given; a bad value of either is
    refused naming both (the flag of a field is its name with dashes)."""
    from pydantic import ValidationError

    from .config import Settings

    try:
        return Settings(**{k: v for k, v in flags.items() if v is not None})
    except ValidationError as error:
        problem = error.errors()[0]
        name = str(problem["loc"][0]) if problem["loc"] else "settings"
        message = problem["msg"].removeprefix("Value error, ")
        raise fail(f"--{name.replace('_', '-')} (FLUXEDIT_{name.upper()}): {message}") from None


def _read_inputs(paths: list[Path], full_size: bool = False) -> list[DecodedImage]:
    """The images as the worker decodes a job's: full_size (output_resolution input) keeps the main image's every
    pixel, to lay the edit back onto."""
    from .imaging.decode import decode_image
    from .schema import InputError

    decoded = []
    for index, path in enumerate(paths):
        field = "image" if index == 0 else f"reference image {index}"
        if not path.is_file():
            raise InputError(f"{field} {path}", "no such file")
        decoded.append(decode_image(path.read_bytes(), field=f"{field} {path}", full_size=full_size and index == 0))
    return decoded


def _read_mask(path: Path, image_size: tuple[int, int], image_path: Path, full_size: bool) -> DecodedImage | None:
    """--mask as the engine takes it: the API's greyscale form (masks.py), the image's size, decoded as the worker
    decodes a job's mask; None when it covers everything (the plain edit). An empty mask or one of another size is
    refused."""
    from .imaging.decode import decode_image
    from .imaging.regions import check_mask_size
    from .masks import Coverage, read_mask, refuse_empty
    from .schema import InputError

    field = f"--mask {path}"
    if not path.is_file():
        raise InputError(field, "no such file")
    mask = refuse_empty(read_mask(path.read_bytes(), field), field)
    check_mask_size(mask.size, image_size, field, str(image_path))
    return None if mask.coverage is Coverage.full else decode_image(mask.png, field, full_size, as_mask=True)


def _output_paths(output: Path | None, first_input: Path, fmt: OutputFormat, count: int) -> list[Path]:
    from .schema import OutputFormat

    extension = ".jpg" if fmt is OutputFormat.jpeg else f".{fmt.value}"
    if output is None:
        output = first_input.with_name(f"{first_input.stem}-edited{extension}")
    elif not output.suffix:
        output = output.with_suffix(extension)
    if count == 1:
        return [output]
    return [output.with_name(f"{output.stem}-{k + 1}{output.suffix}") for k in range(count)]


def _format_from(output: Path | None, fmt: str | None) -> OutputFormat | None:
    from .schema import InputError, OutputFormat

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
    inputs: Annotated[
        list[Path],
        typer.Argument(
            help="The image to edit, then up to 3 reference images. Or a folder: every JPEG, PNG and WebP image "
            "in it gets the same edit (a second run skips those already in the output folder)."
        ),
    ],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="The edit instruction.")],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Output file; its extension sets the format. For a folder: the output folder (default: "
            "FOLDER-edited), each output named after its input.",
        ),
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
    acceleration: Annotated[
        str, typer.Option(help="none (every step in full), regular (step caching) or high (+ fp8, compile on GPU).")
    ] = "none",
    mask: Annotated[
        Path | None,
        typer.Option(
            help="Edit only where this image (the input's size) is white, or opaque where it has transparency.",
            show_default=False,
        ),
    ] = None,
    strength: Annotated[float, typer.Option(help="With --mask: how far the masked part may move, 0-1.")] = 1.0,
    output_resolution: Annotated[
        str, typer.Option(help="model (~1 MP) or input (the input's own size, up to 40 MP; untouched pixels kept).")
    ] = "model",
    lora: Annotated[
        list[str] | None,
        typer.Option(
            help="A LoRA: PATH[:SCALE] of a .safetensors file, or owner/repo[/file.safetensors] (repeatable)."
        ),
    ] = None,
    safety_checker: Annotated[
        bool, typer.Option(help="Black out outputs the safety model flags (when one is set: --safety-model).")
    ] = True,
    model: ModelOption = None,
    components: ComponentsOption = None,
    device: DeviceOption = None,
    dtype: DtypeOption = None,
    memory: MemoryOption = None,
    text_encoder_device: TextEncoderDeviceOption = None,
    quantize: QuantizeOption = None,
    text_encoder_quantize: TextEncoderQuantizeOption = None,
    attention: AttentionOption = None,
    cache_mode: CacheModeOption = None,
    cache_threshold: CacheThresholdOption = None,
    max_loras: MaxLorasOption = None,
    safety_model: SafetyModelOption = None,
    server: Annotated[
        str | None,
        typer.Option(
            help="Edit a folder on this fluxedit server (http://HOST:PORT) as one batch, instead of here.",
            show_default=False,
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(help="The server's API key, with --server.", envvar="FLUXEDIT_API_KEY", show_default=False),
    ] = None,
) -> None:
    """Edit an image (or every image of a folder) with an instruction and write the result."""
    from .schema import InputError, validated_settings

    if inputs[0].is_dir():
        if len(inputs) > 1:
            raise fail("a folder is edited without reference images: give the folder alone")
        if mask is not None:
            raise fail("--mask fits one image: a folder's images differ, so edit them one by one with a mask each")
        folder_settings = dict(
            prompt=prompt, num_inference_steps=steps, guidance_scale=guidance, seed=seed, num_images=num_images,
            output_format=fmt, output_quality=quality, resolution_mode=resolution_mode, write_metadata=metadata,
            acceleration=acceleration, strength=strength, output_resolution=output_resolution,
        )  # fmt: skip
        engine_flags = dict(
            model=model, components=components, device=device, dtype=dtype, memory=memory,
            text_encoder_device=text_encoder_device, attention=attention, cache_mode=cache_mode,
            cache_threshold=cache_threshold, max_loras=max_loras, safety_model=safety_model,
            quantize=quantize, text_encoder_quantize=text_encoder_quantize,
        )  # fmt: skip
        _edit_folder(inputs[0], output, folder_settings, lora or [], safety_checker, engine_flags, server, api_key)
        return
    if server is not None:
        raise fail("--server edits a folder; give a folder of images (the Python SDK edits one image on a server)")

    config = _settings(
        model=model, components=components, device=device, dtype=dtype, memory=memory,
        text_encoder_device=text_encoder_device, attention=attention, cache_mode=cache_mode,
        cache_threshold=cache_threshold, max_loras=max_loras, safety_model=safety_model,
        quantize=quantize, text_encoder_quantize=text_encoder_quantize,
    )  # fmt: skip
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
            acceleration=acceleration,
            strength=strength,
            output_resolution=output_resolution,
        )
        full_size = settings.output_resolution == "input"
        images = _read_inputs(inputs, full_size)
        edit_mask = _read_mask(mask, images[0].original_size, inputs[0], full_size) if mask is not None else None
        loras = _lora_specs(lora or [])
    except InputError as error:
        raise fail(_flag_message(error)) from None
    if len(images) > 4:
        raise fail(f"at most 3 reference images besides the main one (got {len(images) - 1})")

    _check_model_source(config)
    result = _run_edit(config, settings, images, loras, safety_checker, edit_mask)
    paths = _output_paths(output, inputs[0], result.format, len(result.images))
    for path, data in zip(paths, result.images, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        console.print(
            f"wrote [bold]{escape(str(path))}[/] ({result.width}x{result.height}, {len(data):,} bytes)", highlight=False
        )
    seconds = result.timings["generate"] + result.timings["encode"]
    console.print(
        f"seed {result.seed}, {settings.num_inference_steps} steps, {result.transformer_passes} transformer passes "
        f"(acceleration {result.acceleration}), {seconds:.1f} s",
        highlight=False,
    )
    for line in result.logs:
        say(f"note: {line}")


def _edit_folder(
    folder: Path, output, fields: dict, lora: list[str], safety_checker: bool, engine_flags, server, api_key
):
    """`fluxedit edit FOLDER`: plan what is left to do, run it here or on the server, say what happened."""
    from . import folder_edit
    from .schema import InputError, OutputFormat, validated_settings

    try:
        if fields["output_format"] is not None:
            fields["output_format"] = OutputFormat.parse(fields["output_format"])
        settings = validated_settings(**fields)
        loras = _lora_specs(lora)
    except InputError as error:
        raise fail(_flag_message(error)) from None
    out = output if output is not None else folder.resolve().with_name(f"{folder.resolve().name}-edited")
    if out.exists() and not out.is_dir():
        raise fail(f"-o {out} is a file; with a folder, -o names the output folder")
    try:
        plan = folder_edit.plan_folder(folder, out, settings.output_format, settings.num_images)
    except folder_edit.FolderError as error:
        raise fail(str(error)) from None
    for line in folder_edit.describe(plan):
        say(line)
    outcome = folder_edit.FolderOutcome()
    try:
        if plan.todo and server is not None:
            outcome = _folder_on_server(plan, settings, loras, safety_checker, server, api_key)
        elif plan.todo:
            outcome = _folder_here(plan, settings, loras, safety_checker, _settings(**engine_flags))
    except KeyboardInterrupt:
        say("interrupted: run the same command again to go on where it stopped")
        raise typer.Exit(130) from None
    for line in folder_edit.summary(plan, outcome):
        say(line)
    if outcome.failures:
        raise typer.Exit(1)


def _folder_here(plan, settings, loras, safety_checker: bool, config: Settings):
    from . import folder_edit
    from .imaging.decode import decode_image

    _check_model_source(config)
    engine, lora_specs = _load_engine(config, loras)
    from .engine import EditRequest

    def edit_one(image_settings, picture, on_step):
        request = EditRequest(image_settings, [picture], safety_check=safety_checker, loras=lora_specs)
        return engine.edit(request, progress=lambda p: on_step(p.step))

    def decode(path: Path):  # at full size for output_resolution input, as the worker decodes a job's image
        full_size = settings.output_resolution == "input"
        return decode_image(path.read_bytes(), field=f"image {path.name}", full_size=full_size)

    with folder_edit.FolderProgress(console, len(plan.todo), steps=settings.num_inference_steps) as progress:
        return folder_edit.edit_locally(plan, settings, decode, edit_one, progress)


def _folder_on_server(plan, settings, loras, safety_checker: bool, server: str, api_key: str | None):
    import httpx

    from . import folder_edit
    from .client import ApiError, Client

    template = folder_edit.server_input(settings, [(where, scale) for where, scale, _ in loras], safety_checker)
    with Client(server, api_key) as client:
        try:
            with folder_edit.FolderProgress(console, len(plan.todo)) as progress:
                return folder_edit.edit_on_server(plan, client, settings.prompt, template, progress)
        except ApiError as error:
            raise fail(f"the server refused the batch: {error.message}", code=1) from None
        except httpx.HTTPError as error:
            raise fail(f"cannot reach {server}: {error}", code=1) from None


def _check_model_source(config: Settings) -> None:
    """Refuse at once, before torch loads, a --model that names nothing usable or lacks what it needs."""
    from .engine.sources import classify_source, require_components
    from .schema import ModelUnavailable

    try:
        require_components(classify_source(config.model), config.components)
    except ModelUnavailable as error:
        raise fail(str(error), code=1) from None


def _lora_specs(values: list[str]) -> list:
    """--lora PATH[:SCALE]: a local .safetensors file or a Hugging Face reference, with an optional scale."""
    from .schema import MAX_LORAS, InputError

    if len(values) > MAX_LORAS:
        raise InputError("--lora", f"at most {MAX_LORAS} LoRAs (got {len(values)})")
    specs = []
    for value in values:
        where, _, scale_text = value.rpartition(":") if ":" in value else (value, "", "")
        try:
            scale = float(scale_text) if scale_text else 1.0
        except ValueError:
            where, scale = value, 1.0  # a colon that is part of the path
        specs.append((where, scale, f"--lora {value}"))
    return specs


def _resolve_lora(where: str, field: str, token: str | None) -> str:
    """A local file as it is; a Hugging Face reference downloaded with the token (Settings.token: HF_TOKEN)."""
    path = Path(where).expanduser()
    if path.is_file():
        return str(path)
    from .schema import InputError
    from .service.lora_resolver import HUB_REF, download_hub_lora

    match = HUB_REF.match(where)
    if match is None:
        raise InputError(field, "no such file, and not a Hugging Face reference (owner/repo/file.safetensors)")
    return str(download_hub_lora(match.group("repo"), match.group("file"), token, field))


def _run_edit(config: Settings, settings, images, loras=(), safety_check: bool = True, mask=None):
    from .engine import EditRequest
    from .schema import FluxeditError, InputError

    engine, lora_specs = _load_engine(config, loras)
    try:
        with _progress_bar() as bar:
            task = bar.add_task("editing", total=settings.num_inference_steps)
            request = EditRequest(settings, images, safety_check=safety_check, loras=lora_specs, mask=mask)
            return engine.edit(request, progress=lambda p: bar.update(task, completed=p.step))
    except InputError as error:
        raise fail(_flag_message(error)) from None
    except (FluxeditError, ValueError) as error:
        raise fail(str(error), code=1) from None


def _load_engine(config: Settings, loras=()):
    """Import torch, load the model and resolve the LoRAs, once: (the engine, the LoRA specs for its requests)."""
    from .schema import FluxeditError, InputError

    with console.status("importing torch and diffusers ..."), _importing_libraries():
        started = time.perf_counter()
        from .engine import Engine  # torch loads only when an edit runs
        from .engine.loras import LoraSpec

        imported = time.perf_counter() - started
    try:
        lora_specs = [
            LoraSpec(_resolve_lora(where, field, config.token), scale, field) for where, scale, field in loras
        ]
        with console.status(f"loading {escape(config.model)} ..."):
            started = time.perf_counter()
            engine = Engine.from_config(config.engine_config())
    except InputError as error:
        raise fail(_flag_message(error)) from None
    except (FluxeditError, ValueError) as error:
        raise fail(str(error), code=1) from None
    placement = engine.model.placement
    memory = f", {placement.memory_mode}" if placement.device.type == "cuda" else ""
    dtype_name = str(placement.dtype).removeprefix("torch.")
    # bench/cli_startup.py reads both times from this line.
    say(
        f"model {config.model} on {placement.device} ({dtype_name}{memory}) "
        f"loaded in {time.perf_counter() - started:.1f} s, after {imported:.1f} s importing torch and diffusers"
    )
    return engine, lora_specs


@contextmanager
def _importing_libraries():
    """torch, diffusers and transformers make ~440,000 objects that live until exit. The garbage collector
    would scan them over and over while they load (a third of the import time) and once more at exit
    (1.5 s): it is off while they load, then they are set aside (frozen) and it runs as usual."""
    import gc

    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def _progress_bar():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

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
    console.print(f"wrote the tiny model to [bold]{escape(str(folder))}[/]", highlight=False)
    if bfl_file is not None:
        from .engine.tiny import write_tiny_bfl_checkpoint

        write_tiny_bfl_checkpoint(bfl_file)
        console.print(f"wrote its transformer in BFL layout to [bold]{escape(str(bfl_file))}[/]", highlight=False)


# `fluxedit train` has one flag per field of fluxedit.training_options.TrainingOptions, which holds their
# defaults and limits (the API's and the trainer's too): an unset flag (None) takes the model's default. The help
# texts are written out because importing pydantic to read them would double what `fluxedit --help` takes;
# tests/test_cli_train_options.py checks that flags, fields and the defaults the texts name agree.


@app.command()
def train(
    data: Annotated[
        Path, typer.Argument(help="A folder or .zip of NAME_start/NAME_end images (+ NAME.txt), or a .jsonl.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the LoRA (.safetensors, diffusers layout).")],
    steps: Annotated[int | None, typer.Option(help="Training steps (default 1000).", show_default=False)] = None,
    rank: Annotated[int | None, typer.Option(help="LoRA rank (default 16).", show_default=False)] = None,
    alpha: Annotated[float | None, typer.Option(help="LoRA alpha (default: the rank).", show_default=False)] = None,
    learning_rate: Annotated[
        float | None, typer.Option(help="AdamW learning rate (default 1e-4).", show_default=False)
    ] = None,
    targets: Annotated[
        str | None, typer.Option(help="attention (the default), or all (attention, MLPs, projections).")
    ] = None,
    resolution: Annotated[
        int | None,
        typer.Option(help="Bucket side: 1024 (the default) trains at the Kontext sizes, 512 at a quarter."),
    ] = None,
    default_caption: Annotated[str | None, typer.Option(help="Caption for pairs without a NAME.txt.")] = None,
    trigger_word: Annotated[str | None, typer.Option(help="A word put before every caption.")] = None,
    caption_dropout: Annotated[
        float | None, typer.Option(help="Share of steps trained with an empty caption (default 0.05).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Fixes everything: same seed, same weights (default 0).")] = None,
    guidance: Annotated[
        float | None, typer.Option(help="The distilled guidance the transformer sees in training (default 1).")
    ] = None,
    checkpoint_every: Annotated[
        int | None, typer.Option(help="Save a resumable checkpoint every N steps (0: never; default 250).")
    ] = None,
    keep_checkpoints: Annotated[
        int | None, typer.Option(help="Checkpoints kept, the newest; older ones are deleted (default 2).")
    ] = None,
    validate_every: Annotated[
        int | None, typer.Option(help="Edit the held-out pairs every N steps (0: never; default 0).")
    ] = None,
    validation_pairs: Annotated[
        int | None, typer.Option(help="Pairs held out for validation edits (default 0).")
    ] = None,
    optimizer: Annotated[
        str | None, typer.Option(help="adamw (the default), or adamw8bit (bitsandbytes, CUDA).")
    ] = None,
    gradient_checkpointing: Annotated[
        bool | None,
        typer.Option(
            help="Recompute activations in the backward pass: less memory, slower (default: on for CUDA).",
            show_default=False,
        ),
    ] = None,
    work_dir: Annotated[
        Path | None, typer.Option(help="Checkpoints and validation images (default: next to --out).")
    ] = None,
    model: ModelOption = None,
    components: ComponentsOption = None,
    device: DeviceOption = None,
    dtype: DtypeOption = None,
    text_encoder_device: TextEncoderDeviceOption = None,
    quantize: QuantizeOption = None,
    text_encoder_quantize: TextEncoderQuantizeOption = None,
) -> None:
    """Train a LoRA from before/after pairs; a stopped run resumes from its last checkpoint. Defaults and
    limits are the API's (docs/training.md)."""
    from .schema import InputError
    from .training.dataset import DatasetError, load_pairs
    from .training_options import TrainingOptions, validated_training_options

    given = dict(locals())
    chosen = {name: given[name] for name in TrainingOptions.model_fields if given.get(name) is not None}
    try:
        options = validated_training_options(chosen)
    except InputError as error:  # each field is the flag of its name
        raise fail(f"--{error.field.replace('_', '-')}: {error.problem}") from None
    config = _settings(
        model=model, components=components, device=device, dtype=dtype, text_encoder_device=text_encoder_device,
        quantize=quantize, text_encoder_quantize=text_encoder_quantize,
    )  # fmt: skip
    _check_model_source(config)
    try:
        pairs = load_pairs(data, options.default_caption, options.trigger_word)
    except DatasetError as error:
        raise fail(str(error)) from None
    say(f"{len(pairs)} pairs from {data}")
    _run_training(config, pairs, out, work_dir or out.with_name(out.stem + "-training"), options)


def _run_training(config: Settings, pairs, out: Path, work_dir: Path, options) -> None:
    from rich import progress as bars

    from .schema import FluxeditError

    with console.status("importing torch and diffusers ..."), _importing_libraries():
        from .engine.loading import load_model
        from .training.trainer import Trainer, loss_drop

    try:
        with console.status(f"loading {escape(config.model)} ..."):
            loaded = load_model(**config.engine_config().training_model_arguments())
        trainer = Trainer(loaded.pipe, loaded.placement.device, pairs, options, work_dir)
        with console.status("encoding captions and images once ..."):
            trainer.prepare()
        bar = bars.Progress(
            bars.TextColumn("[bold]training"), bars.BarColumn(), bars.MofNCompleteColumn(),
            bars.TextColumn("loss {task.fields[loss]}"), bars.TimeElapsedColumn(), bars.TimeRemainingColumn(),
            console=console,
        )  # fmt: skip
        with bar:
            task = bar.add_task("training", total=trainer.config.steps, loss="-")
            result = trainer.run(
                progress=lambda p: bar.update(task, completed=p.step, loss=f"{p.loss:.4f}"), output=out
            )
    except (FluxeditError, ValueError) as error:
        raise fail(str(error), code=1) from None
    lora, comfyui = escape(str(result.lora_path)), escape(str(result.comfyui_path))
    console.print(
        f"wrote [bold]{lora}[/] and [bold]{comfyui}[/] (ComfyUI); {result.steps} steps, "
        f"loss {loss_drop(result.losses):.2f}x of its start; checkpoints in {escape(str(work_dir))}",
        highlight=False,
    )


keys_app = typer.Typer(help="API keys: create (shown once), list, revoke.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(keys_app, name="keys")
DataDirOption = Annotated[Path | None, typer.Option(help="The service's data folder. [env: FLUXEDIT_DATA_DIR]")]
StorageOption = Annotated[
    str | None,
    typer.Option(help="Where images and LoRAs are kept: a folder, or s3://bucket/prefix (default: the data folder). "
                 "[env: FLUXEDIT_STORAGE]"),
]  # fmt: skip
S3EndpointOption = Annotated[
    str | None,
    typer.Option(help="The S3 endpoint for s3:// storage (default: AWS_ENDPOINT_URL). [env: FLUXEDIT_S3_ENDPOINT_URL]"),
]
DatabaseUrlOption = Annotated[
    str | None,
    typer.Option(
        help="SQLAlchemy URL of the database, e.g. postgresql+psycopg://user@db/fluxedit (default: SQLite in the "
        "data folder). [env: FLUXEDIT_DATABASE_URL]",
        show_default=False,
    ),
]


@app.command()
def serve(
    model: ModelOption = None,
    components: ComponentsOption = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (default 8000).")] = None,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
    device: DeviceOption = None,
    dtype: DtypeOption = None,
    memory: MemoryOption = None,
    text_encoder_device: TextEncoderDeviceOption = None,
    quantize: QuantizeOption = None,
    text_encoder_quantize: TextEncoderQuantizeOption = None,
    attention: AttentionOption = None,
    cache_mode: CacheModeOption = None,
    cache_threshold: CacheThresholdOption = None,
    max_loras: MaxLorasOption = None,
    safety_model: SafetyModelOption = None,
    workers: Annotated[
        str | None,
        typer.Option(
            help="Worker processes (default: one per GPU), or GPU workers on Ray: ray (the cluster at "
            "RAY_ADDRESS) or ray://HEAD:10001. [env: FLUXEDIT_WORKERS]"
        ),
    ] = None,
    min_workers: Annotated[
        int | None, typer.Option(help="With Ray workers: actors kept idle (default 1). [env: FLUXEDIT_MIN_WORKERS]")
    ] = None,
    max_workers: Annotated[
        int | None,
        typer.Option(
            help="With Ray workers: actors at most, added while work waits (default: the cluster's GPUs). "
            "[env: FLUXEDIT_MAX_WORKERS]"
        ),
    ] = None,
    worker_idle_seconds: Annotated[
        float | None,
        typer.Option(
            help="With Ray workers: seconds without work before an actor stops (default 300). "
            "[env: FLUXEDIT_WORKER_IDLE_SECONDS]"
        ),
    ] = None,
    public_url: Annotated[str | None, typer.Option(help="The address clients use, for absolute URLs.")] = None,
    allow_private_urls: Annotated[
        bool | None, typer.Option(help="Fetch URLs on loopback/private addresses.", show_default=False)
    ] = None,
    allow_network: Annotated[
        list[str] | None, typer.Option(help="A CIDR to fetch from even though private (repeatable).")
    ] = None,
    allow_unauthenticated: Annotated[
        bool | None, typer.Option(help="Listen beyond loopback while no API key exists.", show_default=False)
    ] = None,
    storage: StorageOption = None,
    s3_endpoint_url: S3EndpointOption = None,
) -> None:
    """Run the HTTP API, the queue and the workers (SQLite and a local data folder by default)."""
    import uvicorn

    from .api.app import create_app
    from .service.access import is_loopback_host
    from .service.keys import KeyRing

    settings = _settings(
        model=model, components=components, host=host, port=port, data_dir=data_dir, device=device, dtype=dtype,
        memory=memory, text_encoder_device=text_encoder_device, attention=attention, cache_mode=cache_mode,
        cache_threshold=cache_threshold, max_loras=max_loras, workers=workers, safety_model=safety_model,
        min_workers=min_workers, max_workers=max_workers, worker_idle_seconds=worker_idle_seconds,
        public_url=public_url, allow_private_urls=allow_private_urls, allow_unauthenticated=allow_unauthenticated,
        allowed_networks=allow_network, quantize=quantize, text_encoder_quantize=text_encoder_quantize,
        storage=storage, s3_endpoint_url=s3_endpoint_url,
    )  # fmt: skip
    if database_url is not None:
        settings.database_url = database_url
    _check_model_source(settings)
    _open_data_folder(settings)
    keys = KeyRing(_open_sessions(settings))
    if not is_loopback_host(settings.host) and not settings.allow_unauthenticated and not keys.any_active():
        revoked = " (every key is revoked, so it would refuse every request)" if keys.ever_had_keys() else ""
        raise fail(
            f"refusing to listen on {settings.host} without API keys{revoked}: anyone who can reach it could use "
            f"your GPU. Create one with `fluxedit keys create NAME {_data_dir_flag(settings)}`, "
            "or pass --allow-unauthenticated."
        )
    say(f"fluxedit serving {settings.model} on http://{settings.host}:{settings.port}")
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port, log_level="info", timeout_graceful_shutdown=5
    )


def _open_data_folder(settings: Settings) -> Path:
    """Make the data folder if needed and say which it is: a relative default depends on the current folder."""
    folder = settings.data_dir.expanduser().resolve()
    new = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    if settings.database_url:
        where = f"database {settings.database_url.split('@')[-1]}, files in {folder}"  # never the password
    else:
        where = f"data folder {folder}"
    say(f"{where}{' (new)' if new else ''}; choose it with --data-dir or FLUXEDIT_DATA_DIR")
    return folder


def _open_sessions(settings: Settings):
    """The database's session factory; one behind its migrations is refused, naming `fluxedit migrate`."""
    from .store.database import DatabaseBehind, open_database

    try:
        return open_database(settings.resolved_database_url)
    except DatabaseBehind as behind:
        raise fail(str(behind)) from None


@app.command()
def migrate(data_dir: DataDirOption = None, database_url: DatabaseUrlOption = None) -> None:
    """Upgrade the database to this version's schema (servers refuse one that is behind). Stop its servers first."""
    from .store.database import DatabaseBehind, safe_url
    from .store.database import migrate as upgrade_database

    settings = _settings(data_dir=data_dir, database_url=database_url)
    if not settings.database_url:
        _open_data_folder(settings)
    url = settings.resolved_database_url
    try:
        before, head = upgrade_database(url)
    except DatabaseBehind as newer:
        raise fail(str(newer)) from None
    if before == head:
        say(f"{safe_url(url)}: already at migration {head}; nothing to do")
    else:
        say(f"{safe_url(url)}: upgraded from migration {before or 'none'} to {head}")


def _data_dir_flag(settings: Settings) -> str:
    """The --data-dir a suggested command needs to reach the same data as this one."""
    import shlex

    return f"--data-dir {shlex.quote(str(settings.data_dir.expanduser().resolve()))}"


def _key_ring(data_dir: Path | None):
    from .config import Settings
    from .service.keys import KeyRing

    settings = Settings(**({"data_dir": data_dir} if data_dir else {}))
    _open_data_folder(settings)
    return KeyRing(_open_sessions(settings))


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="A name to recognise the key by.")],
    limit: Annotated[float | None, typer.Option(help="Spending limit in USD; past it, creation answers 402.")] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Create a key and print it (it is stored hashed: this is the only time it is shown)."""
    made = _key_ring(data_dir).create(name, limit)
    record = made.record
    if made.adopted:  # the first key owns what was made before keys existed; say so, or it seems lost
        console.print(f"key {record.name!r} adopted {made.adopted} made without a key", highlight=False)
    say(f"created key {record.name!r} (id {record.id}); keep it now, it is not shown again:")
    print(made.key)


@keys_app.command("list")
def keys_list(data_dir: DataDirOption = None) -> None:
    """List keys (never the keys themselves)."""
    from rich.table import Table

    table = Table("id", "name", "prefix", "limit", "created", "revoked")
    for record in _key_ring(data_dir).list():
        limit = f"${record.spending_limit:.2f}" if record.spending_limit is not None else "-"
        revoked = record.revoked_at.strftime("%Y-%m-%d %H:%M") if record.revoked_at else "-"
        created = record.created_at.strftime("%Y-%m-%d %H:%M")
        table.add_row(record.id, escape(record.name), record.prefix + "...", limit, created, revoked)
    Console().print(table)


@keys_app.command("revoke")
def keys_revoke(
    name_or_id: Annotated[str, typer.Argument(help="The key's name or id.")], data_dir: DataDirOption = None
) -> None:
    """Revoke a key: requests with it answer 401 from now on."""
    record = _key_ring(data_dir).revoke(name_or_id)
    if record is None:
        raise fail(f"no active key named or with id {name_or_id!r}")
    say(f"revoked key {record.name!r} (id {record.id})")


RetainOption = Annotated[
    str | None,
    typer.Option(help="Override the setting for this run: 30d, 12h, 3600 (seconds) or off.", show_default=False),
]


@app.command("gc")
def gc(
    data_dir: DataDirOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be removed; remove nothing.")] = False,
    retain_inputs: RetainOption = None,
    retain_outputs: RetainOption = None,
    retain_trainings: RetainOption = None,
    storage: StorageOption = None,
    s3_endpoint_url: S3EndpointOption = None,
) -> None:
    """Remove what has expired now (FLUXEDIT_RETAIN_*); safe while the server runs."""
    from .service.quota import StorageQuota, size_text
    from .service.retention import READ_GRACE_S, Retention
    from .store.files import FileStore
    from .store.objects_setup import Storage

    overrides = {"retain_inputs": retain_inputs, "retain_outputs": retain_outputs, "retain_trainings": retain_trainings}
    overrides |= {"storage": storage, "s3_endpoint_url": s3_endpoint_url}
    settings = _settings(data_dir=data_dir or None, **{k: v for k, v in overrides.items() if v})
    if not settings.database_url and not (settings.data_dir / "fluxedit.db").is_file():
        folder = settings.data_dir.expanduser().resolve()
        raise fail(f"no fluxedit data in {folder}: name the server's folder with --data-dir or FLUXEDIT_DATA_DIR")
    folder = _open_data_folder(settings)
    sessions = _open_sessions(settings)
    quota = StorageQuota.from_settings(settings, sessions)
    files = FileStore(Storage.from_settings(settings).files(), sessions)  # the data folder's, or the bucket's
    retention = Retention.from_settings(settings, sessions, files, quota)
    say(
        "kept: outputs " + _kept_for(settings.retain_outputs) + ", inputs " + _kept_for(settings.retain_inputs)
        + " after their last use, an ended training's data " + _kept_for(settings.retain_trainings)
    )  # fmt: skip
    if not dry_run:
        say(f"removing; the bytes of removed files go {READ_GRACE_S:g} s after their records, for readers under way")
    say(retention.sweep(dry_run=dry_run).summary())
    used = quota.usage().total
    limit = f" of the {size_text(settings.storage_quota_bytes)} quota" if settings.storage_quota_bytes else ""
    say(f"stored now: {size_text(used)}{limit}")


def _kept_for(seconds: float | None) -> str:
    if seconds is None:
        return "for ever"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


app.command("mcp")(mcp_command)  # its module imports only typer: `fluxedit --help` stays fast


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
