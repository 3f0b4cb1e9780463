"""A FLUX transformer from a GGUF file (the Kontext GGUF files people download: Q2_K ... Q8_0, BF16).

The files use BFL's key names (as the widely shared conversions do); the tensors stay in their GGUF
quantization and are dequantized layer by layer as they compute, by diffusers' GGUF support
(`GGUFQuantizationConfig`, its GGUFLinear layers). Our BFL key table splits the fused q/k/v rows: a
GGUF quantization block never crosses a row, so a row range of a quantized tensor is itself valid.
"""

from __future__ import annotations

import numpy as np
import torch
from accelerate import init_empty_weights
from diffusers import FluxTransformer2DModel, GGUFQuantizationConfig

from ..schema import ModelUnavailable
from .bfl_checkpoint import COMFY_PREFIX, bfl_pieces, swap_halves


class _Truncated(Exception):
    def __init__(self, tensor: str, end: int, size: int):
        super().__init__(tensor, end, size)
        self.tensor, self.end, self.size = tensor, end, size


def _open_reader(path: str):
    """gguf's GGUFReader, checking first that every tensor lies inside the file: on a truncated one the reader
    itself fails reshaping the short tensor ("cannot reshape array of size ..."), which says nothing useful."""
    import gguf

    class CheckedReader(gguf.GGUFReader):
        def _build_tensors(self, start_offs, fields):
            size = len(self.data)
            for field in fields:
                _, name, _, dims, raw_type, offset = field.parts
                block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(raw_type[0])]
                end = int(start_offs + offset[0]) + int(np.prod(dims)) * type_size // block
                if end > size:
                    raise _Truncated(bytes(name).decode(), end, size)
            super()._build_tensors(start_offs, fields)

    return CheckedReader(path)


def read_gguf(path: str) -> dict[str, torch.Tensor]:
    """The file's tensors under BFL names (GGUFParameter for quantized ones), or a clear error naming the file."""
    import gguf
    from diffusers.quantizers.gguf.utils import SUPPORTED_GGUF_QUANT_TYPES, GGUFParameter

    try:
        reader = _open_reader(path)
    except _Truncated as short:
        raise ModelUnavailable(
            f"{path} is truncated: tensor {short.tensor} ends at byte {short.end:,} but the file has {short.size:,} "
            "bytes (an interrupted download? fetch it again)"
        ) from None
    except Exception as error:  # the gguf package raises ValueError, struct.error, IndexError... on bad files
        raise ModelUnavailable(f"{path} is not a readable GGUF file ({type(error).__name__}: {error})") from None
    plain = (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16)
    tensors = {}
    for tensor in reader.tensors:
        kind = tensor.tensor_type
        if kind not in plain and kind not in SUPPORTED_GGUF_QUANT_TYPES:
            supported = ", ".join(sorted(t.name for t in SUPPORTED_GGUF_QUANT_TYPES))
            raise ModelUnavailable(
                f"{path}: tensor {tensor.name} is of GGUF type {kind.name}, which cannot be loaded "
                f"(supported: F32, F16, {supported})"
            )
        data = torch.from_numpy(tensor.data.copy())
        name = tensor.name.removeprefix(COMFY_PREFIX)
        tensors[name] = data if kind in plain else GGUFParameter(data, quant_type=kind)
    return tensors


def _rows(tensor: torch.Tensor, start: int, stop: int, swapped: bool) -> torch.Tensor:
    from diffusers.quantizers.gguf.utils import GGUFParameter

    kind = getattr(tensor, "quant_type", None)
    part = torch.Tensor(tensor.data)[start:stop] if kind is not None else tensor[start:stop]
    if swapped:
        part = swap_halves(part)
    part = part.contiguous()
    return GGUFParameter(part, quant_type=kind) if kind is not None else part


def load_gguf_transformer(path: str, config: dict, dtype: torch.dtype) -> FluxTransformer2DModel:
    """The transformer `config` describes with the weights of the GGUF file at `path`, computed in `dtype`."""
    from diffusers.models.model_loading_utils import load_model_dict_into_meta
    from diffusers.quantizers.gguf import GGUFQuantizer

    tensors = read_gguf(path)
    try:
        pieces = bfl_pieces({name: tuple(t.shape) for name, t in tensors.items()})
    except ValueError as error:
        raise ModelUnavailable(f"{path} is not a FLUX transformer in GGUF: {error}") from None
    state = {key: _rows(tensors[bfl_key], *rest) for key, (bfl_key, *rest) in pieces.items()}
    quantizer = GGUFQuantizer(GGUFQuantizationConfig(compute_dtype=dtype))
    with init_empty_weights():
        model = FluxTransformer2DModel.from_config(config)
    if set(model.state_dict()) != set(state):
        raise ModelUnavailable(f"{path} does not fit the transformer of the components (its blocks differ)")
    quantizer.preprocess_model(model=model, device_map=None, state_dict=state, keep_in_fp32_modules=[])
    try:
        load_model_dict_into_meta(
            model, state, dtype=dtype, device_map={"": torch.device("cpu")}, hf_quantizer=quantizer
        )
    except (ValueError, RuntimeError) as error:
        raise ModelUnavailable(f"{path} does not fit the transformer of the components: {error}") from None
    quantizer.postprocess_model(model)
    model.hf_quantizer = quantizer
    return model.eval()
