"""LoRA adapters on the loaded model: load once, switch by scale, evict the least recently used.

Each file becomes a named PEFT adapter (its content hash), so switching between
cached adapters costs a `set_adapters` call, not a read from disk. Only
safetensors files are read (never pickle). A LoRA that does not fit the model
is refused and fully removed again, leaving the base model untouched.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..schema import InputError
from .lora_formats import bfl_lora_to_diffusers, lora_format

log = logging.getLogger(__name__)
DEFAULT_MAX_LOADED = 8
# Several adapters on one model is the point here, not a mistake.
warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute in the model")


@dataclass(frozen=True)
class LoraSpec:
    path: str  # a local .safetensors file
    scale: float = 1.0
    field: str = "loras.0.path"  # for error messages
    digest: str | None = None  # content hash when the caller knows it (saves re-hashing)


class LoraManager:
    def __init__(self, pipe, max_loaded: int = DEFAULT_MAX_LOADED):
        self.pipe = pipe
        self.max_loaded = max_loaded
        self.loaded: OrderedDict[str, str] = OrderedDict()  # adapter name -> path
        self.active: tuple[tuple[str, float], ...] = ()

    def forget_active(self) -> None:
        """Something else (a training) changed the model's adapters: set them again on the next edit."""
        self.active = None

    def activate(self, specs: list[LoraSpec]) -> tuple[tuple[str, float], ...]:
        """Make exactly these adapters (with their scales) active; [] restores the base model."""
        names = [self._ensure_loaded(spec) for spec in specs]
        wanted = tuple(zip(names, (spec.scale for spec in specs), strict=True))
        if wanted == self.active:
            return wanted
        transformer = self.pipe.transformer
        if not names:
            if getattr(transformer, "peft_config", None):  # inference adapters, or a training's between slices
                self.pipe.disable_lora()
        else:
            self.pipe.enable_lora()
            self.pipe.set_adapters(names, adapter_weights=[spec.scale for spec in specs])
        self.active = wanted
        log.debug("active LoRAs on %s: %s", type(transformer).__name__, wanted)
        return wanted

    def _ensure_loaded(self, spec: LoraSpec) -> str:
        name = "lora_" + (spec.digest or _file_digest(spec.path))[:16]
        if name in self.loaded:
            self.loaded.move_to_end(name)
            return name
        # Outside inference mode (edits run inside it): injecting adapters reads the base weights' state dict,
        # which quantized (torchao) weights cannot give as inference tensors, and the adapter's own tensors
        # must be ordinary ones to become parameters.
        with torch.inference_mode(False):
            self._load(name, _read_safetensors(spec), spec)
        self.loaded[name] = spec.path
        while len(self.loaded) > self.max_loaded:
            evicted, _ = self.loaded.popitem(last=False)
            if any(evicted == active for active, _ in self.active or ()):
                self.active = ()  # it will be re-activated by name on the next call
            self.pipe.delete_adapters(evicted)
        return name

    def _load(self, name: str, state_dict: dict, spec: LoraSpec) -> None:
        kind = lora_format(state_dict)
        try:
            if kind in ("bfl", "fal"):
                config = self.pipe.transformer.config
                state_dict = bfl_lora_to_diffusers(state_dict, config.num_attention_heads * config.attention_head_dim)
            self.pipe.load_lora_weights(state_dict, adapter_name=name)
        except Exception as error:  # any failure: undo whatever was injected, then refuse
            self._remove_partial(name)
            raise InputError(
                spec.field, f"{Path(spec.path).name} does not fit FLUX.1 Kontext: {_reason(error)}"
            ) from None
        adapters = self.pipe.get_list_adapters()
        if name not in adapters.get("transformer", []):
            self._remove_partial(name)
            raise InputError(
                spec.field,
                f"{Path(spec.path).name} is not a FLUX LoRA: none of its {len(state_dict)} tensors matches a layer "
                "of the FLUX transformer (a LoRA for another model, such as SDXL?)",
            )

    def _remove_partial(self, name: str) -> None:
        adapters = self.pipe.get_list_adapters()
        if any(name in names for names in adapters.values()):
            self.pipe.delete_adapters(name)
        if self.active:
            names = [n for n, _ in self.active]
            self.pipe.set_adapters(names, adapter_weights=[s for _, s in self.active])


def _read_safetensors(spec: LoraSpec) -> dict:
    path = Path(spec.path)
    if path.suffix != ".safetensors":
        raise InputError(spec.field, f"{path.name} is not a .safetensors file; only safetensors LoRAs are loaded")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise InputError(spec.field, f"{path.name} is not a readable safetensors file ({error})") from None


def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _reason(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text[:300]
