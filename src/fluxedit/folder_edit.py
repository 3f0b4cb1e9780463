"""`fluxedit edit FOLDER`: one edit over every image of a folder, on this machine or on a server.

The outputs are named after the inputs (photo.jpg -> out/photo.jpg, photo-1.jpg... for several images), so a
second run finds what the first one wrote and skips it: an interrupted run is resumed by running it again.
Each output is written whole or not at all (a temporary file renamed), so a killed run leaves nothing half
written that a resumed run would take for done. A failed image is reported and the others go on.

Nothing here loads torch: the local mode gets its engine from the caller as an `edit_one` function.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

if TYPE_CHECKING:
    from .client import Client
    from .engine import EditResult
    from .imaging.decode import DecodedImage
    from .schema import EditSettings, OutputFormat

# What a folder's image files end with; the format an extension names is the output format when no --format.
IMAGE_SUFFIXES = {".jpg": "jpeg", ".jpeg": "jpeg", ".jpe": "jpeg", ".png": "png", ".webp": "webp"}
NOT_AN_IMAGE = "not a JPEG, PNG or WebP image"
POLL_INTERVAL_S = 1.0  # how often a server's batch is asked how far it is
ENDED = frozenset({"success", "error", "cancelled"})


@dataclass(frozen=True)
class FolderImage:
    """One input of the folder and the files its edit writes."""

    source: Path
    format: OutputFormat
    outputs: tuple[Path, ...]

    @property
    def done(self) -> bool:
        return all(path.is_file() for path in self.outputs)


@dataclass
class FolderPlan:
    """What a run over a folder has to do: the images to edit, those already done, the files that are not images."""

    folder: Path
    out: Path
    todo: list[FolderImage] = field(default_factory=list)
    already_done: list[FolderImage] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file name, why)


@dataclass
class FolderOutcome:
    edited: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (file name, reason)


class FolderError(Exception):
    """The folder run cannot start (a clash of output names, the output folder being the input folder...)."""


def output_paths(source: Path, out: Path, fmt: OutputFormat, count: int) -> tuple[Path, ...]:
    """out/photo.jpg for one image, out/photo-1.jpg ... for several: the rules of a single `fluxedit edit`."""
    extension = ".jpg" if fmt.value == "jpeg" else f".{fmt.value}"
    if count == 1:
        return (out / f"{source.stem}{extension}",)
    return tuple(out / f"{source.stem}-{k + 1}{extension}" for k in range(count))


def plan_folder(folder: Path, out: Path, fmt: OutputFormat | None, count: int) -> FolderPlan:
    """The folder's images in name order (not its subfolders), each with its outputs; --format or the input's own."""
    from .schema import OutputFormat

    if not folder.is_dir():
        raise FolderError(f"{folder} is not a folder")
    if out.resolve() == folder.resolve():
        raise FolderError(f"-o {out} is the input folder: the outputs would overwrite the images")
    plan = FolderPlan(folder, out)
    claimed: dict[Path, Path] = {}
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if path.name.startswith("."):
            continue  # .DS_Store and the like: nobody's images
        if path.is_dir():
            plan.skipped.append((f"{path.name}/", "a folder (only the images directly in the folder are edited)"))
            continue
        kind = IMAGE_SUFFIXES.get(path.suffix.lower())
        if kind is None:
            plan.skipped.append((path.name, NOT_AN_IMAGE))
            continue
        image_format = fmt or OutputFormat(kind)
        image = FolderImage(path, image_format, output_paths(path, out, image_format, count))
        for target in image.outputs:
            if target in claimed:
                raise FolderError(
                    f"{claimed[target].name} and {path.name} would both be written to {target}: rename one"
                )
            claimed[target] = path
        (plan.already_done if image.done else plan.todo).append(image)
    return plan


def write_whole(path: Path, data: bytes) -> None:
    """Write a file so that it exists complete or not at all: the resumed run trusts what it finds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)


# ---- progress ----------------------------------------------------------------------------------


class FolderProgress:
    """A bar over the folder's images: done of total, failed, images per minute and the time left."""

    def __init__(self, console: Console, total: int, steps: int | None = None):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console
        self.total = total
        self.done = 0
        self.failed = 0
        self.started = time.monotonic()
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._images = self._progress.add_task("images", total=total, info=self._info())
        # The steps of the image being edited, when they are known (the local mode).
        self._steps = None if steps is None else self._progress.add_task("steps", total=steps, info="")

    def __enter__(self) -> FolderProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def rate_per_minute(self) -> float | None:
        elapsed = time.monotonic() - self.started
        return self.done / elapsed * 60 if self.done and elapsed > 0 else None

    def seconds_left(self, estimate: float | None = None) -> float | None:
        """The server's estimate when it gives one, else the pace of this run so far."""
        if estimate is not None:
            return estimate
        rate = self.rate_per_minute()
        return (self.total - self.done) / rate * 60 if rate else None

    def _info(self, estimate: float | None = None) -> str:
        rate = self.rate_per_minute()
        left = self.seconds_left(estimate)
        return (
            f"{self.failed} failed · "
            f"{'-' if rate is None else f'{rate:.1f}'} images/min · "
            f"{'-' if left is None else _clock(left)} left"
        )

    def ended(self, failed: bool, estimate: float | None = None) -> None:
        self.done += 1
        self.failed += failed
        self._progress.update(self._images, completed=self.done, info=self._info(estimate))

    def refresh(self, estimate: float | None = None) -> None:
        self._progress.update(self._images, info=self._info(estimate))

    def step(self, step: int) -> None:
        if self._steps is not None:
            self._progress.update(self._steps, completed=step)

    def log(self, message: str) -> None:
        """A line above the bar, printed as written."""
        self.console.print(message, markup=False, highlight=False)


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _wrote(path: Path, width: int | None, height: int | None, seed: Any) -> str:
    size = f"{width}x{height}, " if width and height else ""
    return f"wrote {path} ({size}seed {seed})"


# ---- on this machine ---------------------------------------------------------------------------


def edit_locally(
    plan: FolderPlan,
    settings: EditSettings,
    decode: Callable[[Path], DecodedImage],
    edit_one: Callable[[EditSettings, DecodedImage, Callable[[int], None]], EditResult],
    progress: FolderProgress,
) -> FolderOutcome:
    """Edit the plan's images one after another with the engine `edit_one` runs (loaded once, by the caller)."""
    outcome = FolderOutcome()
    for image in plan.todo:
        progress.step(0)
        try:
            picture = decode(image.source)
            result = edit_one(settings.model_copy(update={"output_format": image.format}), picture, progress.step)
            for path, data in zip(image.outputs, result.images, strict=True):
                write_whole(path, data)
                progress.log(_wrote(path, result.width, result.height, result.seed))
        except Exception as error:  # one image's failure is reported and the others go on
            _failed(image.source.name, _reason(error), outcome, progress)
            continue
        outcome.edited += 1
        progress.ended(failed=False)
    return outcome


def _reason(error: Exception) -> str:
    from .schema import FluxeditError

    if isinstance(error, FluxeditError | ValueError | OSError):
        return str(error) or type(error).__name__
    return f"{type(error).__name__}: {error}"


# ---- on a server -------------------------------------------------------------------------------


def server_input(settings: EditSettings, loras: list[tuple[str, float]], safety_checker: bool) -> dict:
    """The batch's input template: the settings as the API names them (the prompt apart), the LoRAs as references
    the server resolves (a registered name, a URL or owner/repo)."""
    template = settings.model_dump(mode="json", exclude_none=True, exclude={"prompt"})
    template["enable_safety_checker"] = safety_checker
    if loras:
        template["loras"] = [{"path": where, "scale": scale} for where, scale in loras]
    return template


def edit_on_server(
    plan: FolderPlan, client: Client, prompt: str, template: dict, progress: FolderProgress
) -> FolderOutcome:
    """One batch of the plan's images (POST /v1/batches through the SDK), each result downloaded as it ends.

    Ctrl+C cancels the batch on the server: what was written stays, and the next run sends the rest again."""
    outcome = FolderOutcome()
    batch = client.batch(images=[image.source for image in plan.todo], prompt=prompt, **template)
    total = batch["total"]
    progress.log(f"batch {batch['id']}: {total} image{'' if total == 1 else 's'} on {client.base_url}")
    handled: set[int] = set()
    reads_after_end = 0
    try:
        while True:
            estimate = batch.get("estimated_seconds_left")
            if batch["progress"]["done"] > len(handled) or batch["status"] in ENDED:
                for item in client.batch_items(batch["id"]):
                    if item["index"] not in handled and item["status"] in ENDED:
                        handled.add(item["index"])
                        _take_item(client, plan.todo[item["index"]], item, outcome, progress, estimate)
            if len(handled) == len(plan.todo):
                return outcome
            if batch["status"] in ENDED:
                reads_after_end += 1  # the items may lag the batch's status by a moment, not for long
                if reads_after_end > 3:
                    for index in sorted(set(range(len(plan.todo))) - handled):
                        _failed(plan.todo[index].source.name, "the batch ended without it", outcome, progress)
                    return outcome
            progress.refresh(estimate)
            time.sleep(POLL_INTERVAL_S)
            batch = client.get_batch(batch["id"])
    except KeyboardInterrupt:
        client.cancel_batch(batch["id"])
        progress.log(f"cancelled batch {batch['id']} on the server")
        raise


def _failed(name: str, reason: str, outcome: FolderOutcome, progress: FolderProgress, estimate=None) -> None:
    outcome.failures.append((name, reason))
    progress.log(f"failed {name}: {reason}")
    progress.ended(failed=True, estimate=estimate)


def _take_item(
    client: Client, image: FolderImage, item: dict, outcome: FolderOutcome, progress: FolderProgress, estimate
) -> None:
    name = image.source.name
    if item["status"] != "success":
        reason = item.get("error") or ("cancelled" if item["status"] == "cancelled" else "failed")
        _failed(name, reason, outcome, progress, estimate)
        return
    try:
        images = client.download({"id": item["prediction_id"], "status": "success", "output": item["output"]})
        if len(images) != len(image.outputs):
            raise ValueError(f"the server made {len(images)} images, {len(image.outputs)} were asked for")
        for path, edited in zip(image.outputs, images, strict=True):
            write_whole(_with_format_of(path, edited.content_type), edited.data)
            progress.log(_wrote(path, *_size_of(edited.data), item.get("seed")))
    except Exception as error:  # a download that fails is this image's failure, not the run's
        _failed(name, _reason(error), outcome, progress, estimate)
        return
    outcome.edited += 1
    progress.ended(failed=False, estimate=estimate)


def _with_format_of(path: Path, content_type: str) -> Path:
    """The planned name, unless the server answered another format (an input whose extension lied)."""
    extension = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp"}.get(content_type)
    return path if extension is None or extension == path.suffix else path.with_suffix(extension)


def _size_of(data: bytes) -> tuple[int | None, int | None]:
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as picture:
            return picture.size
    except OSError:
        return None, None


# ---- the run -----------------------------------------------------------------------------------


def summary(plan: FolderPlan, outcome: FolderOutcome) -> Iterator[str]:
    """The closing lines: what was edited, skipped and failed, and where the outputs are."""
    edited, failed, skipped = outcome.edited, len(outcome.failures), len(plan.already_done)
    line = f"edited {edited}, failed {failed}, skipped {skipped} already in {plan.out}"
    if plan.skipped:
        line += f"; {len(plan.skipped)} other {'entry' if len(plan.skipped) == 1 else 'entries'} of the folder left out"
    yield line
    for name, reason in outcome.failures:
        yield f"  failed {name}: {reason}"
    if outcome.failures:
        yield "run the same command again to retry the failed images (the edited ones are skipped)"


def describe(plan: FolderPlan) -> Iterator[str]:
    """The opening lines: the skipped files, and what is already done."""
    for name, reason in plan.skipped:
        yield f"skipped {name}: {reason}"
    count = len(plan.todo) + len(plan.already_done)
    line = f"{count} images in {plan.folder}"
    if plan.already_done:
        line += f": {len(plan.already_done)} already done in {plan.out} (skipped), {len(plan.todo)} to edit"
    yield line
