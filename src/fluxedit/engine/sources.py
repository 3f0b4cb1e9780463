"""What a `--model` value names: the tiny model, a local folder, a single file, or a hub repo."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from ..config import DEFAULT_MODEL
from ..schema import ModelUnavailable

TINY = "tiny"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class SourceKind(StrEnum):
    tiny = "tiny"
    folder = "folder"
    single_file = "single_file"
    gguf = "gguf"
    hub = "hub"


@dataclass(frozen=True)
class ModelSource:
    kind: SourceKind
    location: str  # "tiny", a path, or a repo id

    def __str__(self) -> str:
        return self.location


def classify_source(value: str) -> ModelSource:
    """Say what `value` names, or explain why it names nothing usable."""
    if value == TINY:
        return ModelSource(SourceKind.tiny, TINY)
    path = Path(value).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file() and not (path / "transformer").is_dir():
            raise ModelUnavailable(
                f"{value} is a folder but not a diffusers pipeline (no model_index.json): "
                "point --model at the folder that holds model_index.json, transformer/, vae/, ..."
            )
        return ModelSource(SourceKind.folder, str(path))
    if path.is_file():
        if path.suffix == ".gguf":
            return ModelSource(SourceKind.gguf, str(path))
        if path.suffix != ".safetensors":
            raise ModelUnavailable(
                f"{value} is neither a .safetensors nor a .gguf file: only safetensors checkpoints are loaded "
                "(and GGUF transformers); pickled .ckpt/.pt/.bin files can run code when opened"
            )
        return ModelSource(SourceKind.single_file, str(path))
    if _REPO_ID.match(value) and not value.startswith((".", "/", "~")):
        return ModelSource(SourceKind.hub, value)
    raise ModelUnavailable(
        f"{value} was not found: it is not an existing folder or .safetensors file, "
        f"nor a Hugging Face repo id like {DEFAULT_MODEL}"
    )


def require_components(source: ModelSource, components: str | None) -> None:
    """A single-file transformer holds no text encoders, VAE or configs: say at once where they must come from."""
    if source.kind in (SourceKind.single_file, SourceKind.gguf) and not components:
        raise ModelUnavailable(
            f"{source.location} is a single-file transformer: the text encoders, VAE and configs come from "
            "--components (or FLUXEDIT_COMPONENTS). Pass a diffusers folder of FLUX.1 Kontext [dev] (the one holding "
            f"model_index.json), or its hub id {DEFAULT_MODEL} (gated: accept its licence and set HF_TOKEN; "
            "about 10 GB is downloaded once), or ComfyUI's component files: its models/ folder (or a comma-separated "
            "list) holding clip_l.safetensors, t5xxl_fp16.safetensors or t5xxl_fp8_e4m3fn(_scaled).safetensors, "
            "and ae.safetensors"
        )
