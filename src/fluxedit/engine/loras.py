"""LoRA adapters on the loaded model: load once, switch by scale, evict the least recently used.

Each file becomes a named PEFT adapter (its content hash), so switching between
cached adapters costs a `set_adapters` call, not a read from disk. Only
safetensors files are read (never pickle). A LoRA that does not fit the model
is refused and fully removed again, leaving the base model untouched.

On a compiled transformer (CUDA, see fast_paths.py) adapters are hotswapped instead: diffusers'
`enable_lora_hotswap(target_rank=...)` is called before the first adapter loads, which pads every adapter
to that rank and keeps its scales as tensors; each LoRA of an edit then has a fixed slot (slot_0, slot_1,
...) whose weights are replaced in place, all slots stay active (unused ones at weight 0) and the scales are
written into the layers' scaling tensors in place, so the compiled graphs see the same modules and
attributes whatever LoRA runs and are never recompiled for a switch. A LoRA
that cannot be swapped into its slot (a rank above the target, layers the slot lacks, text-encoder layers)
is loaded into the slot afresh: correct, at the cost of one recompilation, and logged.
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
# The highest LoRA rank hotswapped without recompiling (adapters are padded to it); higher ones load afresh.
HOTSWAP_TARGET_RANK = 128
# Several adapters on one model is the point here, not a mistake.
warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute in the model")


@dataclass(frozen=True)
class LoraSpec:
    path: str  # a local .safetensors file
    scale: float = 1.0
    field: str = "loras.0.path"  # for error messages
    digest: str | None = None  # content hash when the caller knows it (saves re-hashing)


class LoraManager:
    def __init__(self, pipe, max_loaded: int = DEFAULT_MAX_LOADED, hotswap_rank: int | None = None):
        self.pipe = pipe
        self.max_loaded = max_loaded
        self.loaded: OrderedDict[str, str] = OrderedDict()  # adapter name -> path
        self.active: tuple[tuple[str, float], ...] = ()
        self.hotswap_rank = hotswap_rank
        self.slots: list[str] = []  # hotswap mode: the adapter (by content name) each slot holds now
        self._reactivate = False  # hotswap mode: the slots must be made active again (after a training)
        self._units: dict[tuple[int, str], float] = {}  # (module, slot) -> its scaling at weight 1 for that LoRA
        if hotswap_rank:
            # Before any adapter exists, as diffusers requires: it prepares the model for compiled hotswaps.
            pipe.enable_lora_hotswap(target_rank=hotswap_rank)

    def forget_active(self) -> None:
        """Something else (a training) changed the model's adapters: set them again on the next edit."""
        self.active = None
        self._reactivate = True

    def activate(self, specs: list[LoraSpec]) -> tuple[tuple[str, float], ...]:
        """Make exactly these adapters (with their scales) active; [] restores the base model."""
        if self.hotswap_rank:
            return self._activate_slots(specs)
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

    def _activate_slots(self, specs: list[LoraSpec]) -> tuple[tuple[str, float], ...]:
        """Hotswap mode: LoRA i goes into slot i, in place; the set of active adapters never changes."""
        names = [_adapter_name(spec) for spec in specs]
        wanted = tuple(zip(names, (spec.scale for spec in specs), strict=True))
        if wanted == self.active:
            return wanted
        slots_before = list(self.slots)
        for index, (name, spec) in enumerate(zip(names, specs, strict=True)):
            if index < len(self.slots) and self.slots[index] == name:
                continue
            with torch.inference_mode(False):
                refilled = self._fill_slot(index, name, _read_safetensors(spec), spec)
            self._units.update(_unit_scalings(self._lora_modules(), f"slot_{index}"))
            if refilled:
                slots_before = None  # a new adapter: the active set changes (the one recompilation it costs)
        for name, spec in zip(names, specs, strict=True):  # what the slots hold, as `loaded` says elsewhere
            self.loaded[name] = spec.path
        for name in [n for n in self.loaded if n not in self.slots]:
            del self.loaded[name]
        if self.slots:
            weights = [spec.scale for spec in specs] + [0.0] * (len(self.slots) - len(specs))
            if self._reactivate or slots_before is None or len(slots_before) != len(self.slots):
                self._reactivate = False
                self.pipe.set_adapters(_slot_names(len(self.slots)), adapter_weights=[1.0] * len(self.slots))
            with torch.inference_mode(False), torch.no_grad():  # ordinary tensors: the next swap writes them too
                self._set_slot_weights(weights)
        self.active = wanted
        log.debug("active LoRAs (hotswap slots) on %s: %s", type(self.pipe.transformer).__name__, wanted)
        return wanted

    def _lora_modules(self) -> list[torch.nn.Module]:
        parts = (self.pipe.transformer, self.pipe.text_encoder, self.pipe.text_encoder_2)
        modules = [m for part in parts if part is not None for m in part.modules()]
        return [m for m in modules if isinstance(getattr(m, "scaling", None), dict)]

    def _set_slot_weights(self, weights: list[float]) -> None:
        """Each slot's scale, written into its layers' scaling tensors in place: peft's set_adapters puts Python
        floats there, a new constant for a compiled graph at every new scale (and 0 for an unused slot)."""
        for module in self._lora_modules():
            for index, weight in enumerate(weights):
                slot = f"slot_{index}"
                unit = self._units.get((id(module), slot))
                if unit is None or slot not in module.scaling:
                    continue
                if isinstance(module.scaling[slot], torch.Tensor):
                    module.scaling[slot].fill_(unit * weight)
                else:  # a float (set_adapters writes them): a tensor from now on, changed in place
                    device = next(module.parameters()).device
                    module.scaling[slot] = torch.tensor(unit * weight, dtype=torch.float32, device=device)

    def _fill_slot(self, index: int, name: str, state_dict: dict, spec: LoraSpec) -> bool:
        """Put the LoRA into slot `index`: swapped in place (False), or loaded afresh (True)."""
        slot = f"slot_{index}"
        self.active = None  # whatever happens below, set the adapters again on the next edit
        if index < len(self.slots):
            try:
                self._load(slot, dict(state_dict), spec, hotswap=True)
                self.slots[index] = name
                return False
            except InputError as error:
                log.warning("%s cannot be hotswapped into %s (%s): loaded afresh, one recompilation", spec.path, slot,
                            error.problem)  # fmt: skip
                self.pipe.delete_adapters(slot)
        try:
            self._load(slot, state_dict, spec)
        except (
            InputError
        ):  # refused: this slot is gone (removed by _load); drop the later ones, keeping them contiguous
            for later in _slot_names(len(self.slots))[index + 1 :]:
                self.pipe.delete_adapters(later)
            del self.slots[index:]
            raise
        if index < len(self.slots):
            self.slots[index] = name
        else:
            self.slots.append(name)
        return True

    def _ensure_loaded(self, spec: LoraSpec) -> str:
        name = _adapter_name(spec)
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

    def _load(self, name: str, state_dict: dict, spec: LoraSpec, hotswap: bool = False) -> None:
        kind = lora_format(state_dict)
        try:
            if kind in ("bfl", "fal"):
                config = self.pipe.transformer.config
                state_dict = bfl_lora_to_diffusers(state_dict, config.num_attention_heads * config.attention_head_dim)
            if hotswap:
                self.pipe.load_lora_weights(state_dict, adapter_name=name, hotswap=True)
            else:
                self.pipe.load_lora_weights(state_dict, adapter_name=name)
        except Exception as error:  # any failure: undo whatever was injected, then refuse
            if hotswap:  # the slot's adapter is still whole (peft checks before it swaps): the caller decides
                raise InputError(spec.field, _reason(error)) from None
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
        if self.active and not self.hotswap_rank:
            names = [n for n, _ in self.active]
            self.pipe.set_adapters(names, adapter_weights=[s for _, s in self.active])


def _unit_scalings(modules: list[torch.nn.Module], slot: str) -> dict[tuple[int, str], float]:
    """The scalings a slot's LoRA has right after loading (alpha / rank per layer): its weight-1 values."""
    return {(id(m), slot): float(m.scaling[slot]) for m in modules if slot in m.scaling}


def _adapter_name(spec: LoraSpec) -> str:
    return "lora_" + (spec.digest or _file_digest(spec.path))[:16]


def _slot_names(count: int) -> list[str]:
    return [f"slot_{index}" for index in range(count)]


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
